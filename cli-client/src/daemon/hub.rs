//! The event hub: one task that owns the subscribers and the acknowledged cursor.
//!
//! Message events are numbered by the message's `local_seq` (its position in the local store),
//! so they are durable: on `subscribe` the hub replays every message after the acknowledged
//! cursor from the store, then passes on new ones. Because replay and live delivery both read
//! the store from the subscriber's own position (`sent_upto`), nothing is skipped or doubled
//! between the two. Other events (receipts, typing, presence, identity changes, send results, connection
//! changes) are live only and carry no `event_id`.

use std::collections::HashMap;

use hush_client_core::{Client, Event, EventStream};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::rpc;
use crate::commands::is_own;
use crate::cursor::Cursor;
use crate::output;

/// Messages read from the store per query.
const PAGE: usize = 500;

/// Lines to write to one connection.
pub type Outbox = mpsc::UnboundedSender<String>;

/// What connections ask the hub.
#[derive(Debug)]
pub enum HubCommand {
    /// Start (or restart) the event stream of connection `conn`: answer the request `request_id`
    /// on `out`, then replay every message after `after` (default: the acknowledged cursor).
    Subscribe {
        /// The connection.
        conn: u64,
        /// Where its lines go.
        out: Outbox,
        /// The JSON-RPC id of the `subscribe` request (`None`: a notification, no answer).
        request_id: Option<Value>,
        /// Replay from here instead of the acknowledged cursor.
        after: Option<u64>,
    },
    /// Stop the event stream of `conn`; answered once the hub holds no handle to it.
    Unsubscribe {
        /// The connection.
        conn: u64,
        /// Answered when done.
        reply: oneshot::Sender<()>,
    },
    /// Acknowledge every event up to `event_id`; answers the new cursor.
    Ack {
        /// The highest handled event.
        event_id: u64,
        /// The cursor after the ack, or why it could not be stored.
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

struct Subscriber {
    out: Outbox,
    /// The `local_seq` up to which this subscriber has been sent every message.
    sent_upto: u64,
}

/// The hub's state; see the module documentation.
pub struct Hub {
    client: Client,
    cursor: Cursor,
    own_username: String,
    own_device: u32,
    /// The highest `local_seq` seen in the store (acks are clamped to it).
    highest: u64,
    subscribers: HashMap<u64, Subscriber>,
}

impl Hub {
    /// A hub for `client`'s account, with the acknowledged `cursor`.
    pub fn new(client: Client, cursor: Cursor, own_username: String, own_device: u32) -> Hub {
        let highest = cursor.get();
        Hub { client, cursor, own_username, own_device, highest, subscribers: HashMap::new() }
    }

    /// Runs until the client's event stream ends and every connection has dropped its sender.
    pub async fn run(mut self, mut events: EventStream, mut commands: mpsc::UnboundedReceiver<HubCommand>) {
        let mut events_open = true;
        loop {
            tokio::select! {
                event = events.recv(), if events_open => match event {
                    Some(event) => self.event(event).await,
                    None => events_open = false,
                },
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => return,
                },
            }
        }
    }

    async fn event(&mut self, event: Event) {
        if matches!(event, Event::Message(_) | Event::QueueEmpty) {
            let conns: Vec<u64> = self.subscribers.keys().copied().collect();
            for conn in conns {
                self.catch_up(conn).await;
            }
        } else if let Some(params) = output::live_event_json(&event) {
            let line = rpc::notification("event", params);
            self.subscribers.retain(|_, s| s.out.send(line.clone()).is_ok());
        }
    }

    async fn command(&mut self, command: HubCommand) {
        match command {
            HubCommand::Subscribe { conn, out, request_id, after } => {
                let from = after.unwrap_or(self.cursor.get());
                if let Some(id) = request_id {
                    let result = json!({ "replay_after": from, "acked": self.cursor.get() });
                    let _ = out.send(rpc::response(id, result));
                }
                self.subscribers.insert(conn, Subscriber { out, sent_upto: from });
                self.catch_up(conn).await;
            }
            HubCommand::Unsubscribe { conn, reply } => {
                self.subscribers.remove(&conn);
                let _ = reply.send(());
            }
            HubCommand::Ack { event_id, reply } => {
                let upto = event_id.min(self.highest);
                let result = self.cursor.advance(upto).map(|()| self.cursor.get()).map_err(|e| format!("{e:#}"));
                let _ = reply.send(result);
            }
        }
    }

    /// Sends subscriber `conn` every message stored after its position.
    async fn catch_up(&mut self, conn: u64) {
        loop {
            let Some(from) = self.subscribers.get(&conn).map(|s| s.sent_upto) else { return };
            let page = match self.client.messages_after(from, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read new messages from the local store");
                    return;
                }
            };
            let Some(last) = page.last().map(|m| m.local_seq) else { return };
            self.highest = self.highest.max(last);
            let Some(sub) = self.subscribers.get_mut(&conn) else { return };
            for m in page.iter().filter(|m| !is_own(m, &self.own_username, self.own_device)) {
                let mut params = output::message_json(m);
                if let Some(obj) = params.as_object_mut() {
                    obj.insert("event_id".into(), json!(m.local_seq));
                    obj.insert("type".into(), json!("message"));
                }
                if sub.out.send(rpc::notification("event", params)).is_err() {
                    self.subscribers.remove(&conn);
                    return;
                }
            }
            sub.sent_upto = last;
            if page.len() < PAGE {
                return;
            }
        }
    }
}
