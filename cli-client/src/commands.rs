//! The one-shot commands: open the account, do one thing, print, shut the client down.

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context as _;
use hush_client_core::{
    Client, ClientConfig, ClientError, ConnectionState, Event, EventStream, MessageDirection, MessageId, MessageRecord,
};
use serde_json::json;
use tokio::time::Instant;

use crate::cli::OutboxAction;
use crate::cursor::{Cursor, RECEIVE_CURSOR};
use crate::exit::{CliError, Kind};
use crate::output::{self, Printer};

/// Messages fetched from the store per query.
const PAGE: usize = 500;
/// How long `receive` waits for the mailbox to drain without `--timeout`.
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// What every command needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Data directory and server.
    pub config: ClientConfig,
    /// How to print.
    pub printer: Printer,
}

impl Ctx {
    /// Opens the account of the data directory (creating nothing if there is none).
    pub async fn open(&self) -> anyhow::Result<Client> {
        let dir = self.config.data_dir.display();
        match Client::open(self.config.clone()).await {
            Ok(client) => Ok(client),
            Err(ClientError::NotRegistered) => Err(CliError::new(
                Kind::Other,
                format!("no account in {dir}; run `hush register USERNAME` first, or pick the account's --data-dir"),
            )
            .into()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot open the account in {dir}"))),
        }
    }
}

/// Runs `f` with the opened client and shuts the client down afterwards, whatever happened.
macro_rules! with_client {
    ($ctx:expr, |$client:ident| $body:expr) => {{
        let $client = $ctx.open().await?;
        let result: anyhow::Result<()> = async { $body }.await;
        let _ = $client.shutdown().await;
        result
    }};
}

/// How long a one-shot command that changed something the account's other devices follow
/// (a trust decision) waits to tell them.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// `hush register USERNAME`.
pub async fn register(ctx: &Ctx, username: &str) -> anyhow::Result<()> {
    let client = Client::register(ctx.config.clone(), username)
        .await
        .with_context(|| format!("cannot register {username:?} on {}", ctx.config.server_url))?;
    let result = async {
        let s = client.status().await?;
        let text = format!(
            "registered {} (account {}, device {}) on {} in {}; later commands use this server",
            s.username,
            s.account_id,
            s.device_id,
            s.server_url,
            ctx.config.data_dir.display()
        );
        let value = json!({
            "username": s.username,
            "account_id": s.account_id.to_string(),
            "device_id": s.device_id,
            "server": s.server_url,
            "data_dir": ctx.config.data_dir.display().to_string(),
        });
        ctx.printer.emit(&value, &text)
    }
    .await;
    let _ = client.shutdown().await;
    result
}

/// The text of `hush send`: the argument, or stdin for `-`.
pub fn message_text(arg: String) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg);
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read the message from stdin")?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Tracks the connection while a command waits for something.
#[derive(Debug, Default)]
struct Reachability {
    connected: bool,
    last_failure: Option<String>,
    /// Why the server did not take the message yet (it is retried).
    delayed: Option<String>,
    /// The connection stopped for good: why, and what to do.
    stopped: Option<String>,
}

impl Reachability {
    fn observe(&mut self, event: &Event) {
        match event {
            Event::Connection(ConnectionState::Connected) => self.connected = true,
            Event::Connection(ConnectionState::Disconnected(reason)) => {
                tracing::info!(%reason, "no connection to the server; retrying");
                self.last_failure = Some(reason.clone());
            }
            Event::Connection(ConnectionState::Stopped(reason)) => self.stopped = Some(reason.clone()),
            Event::SendDelayed { reason, .. } => self.delayed = Some(reason.clone()),
            _ => {}
        }
    }

    /// The error for a wait for `what` that ran out after `waited`.
    fn timeout_error(&self, server: &str, what: &str, waited: Duration) -> CliError {
        if let Some(stopped) = &self.stopped {
            return CliError::new(Kind::Other, stopped.clone());
        }
        let message = if self.connected {
            let why = self.delayed.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            format!("{what} took longer than {waited:?}{why}")
        } else {
            let why = self.last_failure.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            format!("cannot reach the server at {server} (tried for {waited:?}){why}")
        };
        CliError::new(Kind::Network, message)
    }
}

/// `hush send USERNAME TEXT`.
pub async fn send(ctx: &Ctx, to: &str, text: &str, timeout: Duration) -> anyhow::Result<()> {
    with_client!(ctx, |client| {
        let mut events = client.events();
        let id = client.send_text(to, text).await.with_context(|| format!("cannot send to {to}"))?;
        client.connect().await?;
        let deadline = Instant::now() + timeout;
        let mut reach = Reachability::default();
        let outcome = loop {
            let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => break Err(anyhow::Error::new(hush_client_core::ClientError::Shutdown)),
                Err(_) => {
                    let mut e = reach.timeout_error(&ctx.config.server_url, "sending", timeout);
                    e.message.push_str(&format!(
                        "; message {id} stays queued and goes out with the next hush command that connects"
                    ));
                    break Err(e.into());
                }
            };
            reach.observe(&event);
            match event {
                Event::Sent { id: sent, to: who, server_timestamp } if sent == id => {
                    let value = json!({ "id": id.to_string(), "to": who, "status": "sent",
                                        "server_timestamp": server_timestamp });
                    break ctx.printer.emit(&value, &format!("sent {id} to {who}"));
                }
                Event::SendFailed { id: failed, reason, .. } if failed == id => {
                    break Err(CliError::new(Kind::Other, format!("message {id} was not sent: {reason}")).into());
                }
                Event::SendDelayed { id: delayed, code, reason, .. } if delayed == id && code == "mailbox_full" => {
                    let msg = format!(
                        "{reason}; message {id} stays queued and is tried again (at least once a minute while a \
                         hush command or the daemon is connected, and on every reconnect); \
                         `hush outbox cancel {id}` drops it"
                    );
                    break Err(CliError::new(Kind::MailboxFull, msg).into());
                }
                Event::Connection(ConnectionState::Stopped(reason)) => {
                    let msg = format!("{reason}; message {id} stays queued");
                    break Err(CliError::new(Kind::Other, msg).into());
                }
                // Waiting out the limit is fine if it fits in the timeout; otherwise say so (exit 5).
                Event::RateLimited { id: limited, retry_after_ms, .. }
                    if limited == id && Instant::now() + Duration::from_millis(retry_after_ms) > deadline =>
                {
                    let msg = format!(
                        "the server is rate-limiting this device (retry in {:.1} s); message {id} stays queued \
                         and goes out with the next hush command that connects: do not send it again",
                        retry_after_ms as f64 / 1000.0
                    );
                    break Err(CliError::new(Kind::RateLimited, msg).into());
                }
                Event::IdentityChanged { username } if username.eq_ignore_ascii_case(to.trim()) => {
                    let msg = format!(
                        "the identity key of {username} changed; compare safety numbers \
                         (`hush safety-number {username}`), then `hush trust {username}`; message {id} stays queued"
                    );
                    break Err(CliError::new(Kind::UntrustedIdentity, msg).into());
                }
                _ => {}
            }
        };
        let _ = client.disconnect().await;
        outcome
    })
}

/// Prints messages after the `receive` cursor and moves the cursor past them.
struct Feed {
    cursor: Cursor,
    own_username: String,
    own_device: u32,
}

impl Feed {
    async fn new(ctx: &Ctx, client: &Client) -> anyhow::Result<Feed> {
        let status = client.status().await?;
        let cursor = Cursor::load(&ctx.config.data_dir, RECEIVE_CURSOR)?;
        Ok(Feed { cursor, own_username: status.username, own_device: status.device_id })
    }

    /// Prints every message stored after the cursor, then advances it (after printing, so a
    /// crash in between prints them again instead of losing them).
    async fn print_new(&mut self, client: &Client, printer: Printer) -> anyhow::Result<()> {
        loop {
            let page = client.messages_after(self.cursor.get(), PAGE).await?;
            let Some(last) = page.last().map(|m| m.local_seq) else { return Ok(()) };
            for m in page.iter().filter(|m| !is_own(m, &self.own_username, self.own_device)) {
                printer.emit(&output::message_json(m), &output::message_text(m))?;
            }
            self.cursor.advance(last)?;
            if page.len() < PAGE {
                return Ok(());
            }
        }
    }
}

/// A message written on this very device: already known to whoever sent it, so not "received".
pub fn is_own(m: &MessageRecord, username: &str, device: u32) -> bool {
    m.direction == MessageDirection::Outgoing && m.from == username && m.from_device == device
}

/// `hush receive [--follow] [--timeout S]`.
pub async fn receive(ctx: &Ctx, follow: bool, timeout: Option<Duration>) -> anyhow::Result<()> {
    with_client!(ctx, |client| {
        let mut feed = Feed::new(ctx, &client).await?;
        let mut events = client.events();
        feed.print_new(&client, ctx.printer).await?;
        let outcome = if follow {
            follow_messages(ctx, &client, &mut feed, &mut events, timeout).await
        } else {
            let wait = timeout.unwrap_or(DEFAULT_DRAIN);
            let drained = client.run_until_queue_empty(wait).await;
            let mut reach = Reachability::default();
            while let Some(event) = events.try_recv() {
                reach.observe(&event);
            }
            match drained {
                Ok(()) => Ok(()),
                Err(hush_client_core::ClientError::Timeout(_)) => {
                    Err(reach.timeout_error(&ctx.config.server_url, "fetching every waiting message", wait).into())
                }
                Err(e) => Err(e.into()),
            }
        };
        let printed = feed.print_new(&client, ctx.printer).await;
        outcome.and(printed)
    })
}

async fn follow_messages(
    ctx: &Ctx,
    client: &Client,
    feed: &mut Feed,
    events: &mut EventStream,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut stop = crate::signals::Stop::new()?;
    client.connect().await?;
    let mut reach = Reachability::default();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => break,
                Some(event) => {
                    reach.observe(&event);
                    if matches!(event, Event::Message(_) | Event::QueueEmpty) {
                        feed.print_new(client, ctx.printer).await?;
                    }
                    if let (Some(text), Some(json)) =
                        (crate::presence::event_text(&event), output::live_event_json(&event))
                    {
                        ctx.printer.emit(&json, &text)?;
                    }
                }
            },
            () = stop.wait() => break,
            () = crate::signals::sleep_until(deadline) => break,
        }
    }
    client.disconnect().await?;
    Ok(())
}

/// `hush history USERNAME [--limit N]`.
pub async fn history(ctx: &Ctx, with: &str, limit: usize) -> anyhow::Result<()> {
    with_client!(ctx, |client| {
        for m in client.history(with, limit).await.with_context(|| format!("cannot read the history with {with}"))? {
            ctx.printer.emit(&output::message_json(&m), &output::message_text(&m))?;
        }
        Ok(())
    })
}

/// `hush contacts`.
pub async fn contacts(ctx: &Ctx) -> anyhow::Result<()> {
    with_client!(ctx, |client| {
        for (c, p) in crate::presence::contacts_with_presence(&client).await? {
            ctx.printer.emit(&crate::presence::contact_json(&c, &p), &crate::presence::contact_text(&c, &p))?;
        }
        Ok(())
    })
}

/// `hush safety-number USERNAME`.
pub async fn safety_number(ctx: &Ctx, with: &str) -> anyhow::Result<()> {
    with_client!(ctx, |client| {
        let n = client
            .safety_number(with)
            .await
            .with_context(|| format!("cannot compute the safety number with {with}"))?;
        ctx.printer.emit(&output::safety_json(with, &n), &n.grouped())
    })
}

/// `hush trust USERNAME`.
pub async fn trust(ctx: &Ctx, with: &str) -> anyhow::Result<()> {
    with_client!(ctx, |client| {
        client.trust(with).await.with_context(|| format!("cannot trust {with}"))?;
        // Tell this account's other devices now; if the server is not reachable, the next
        // command that connects does (the decision waits in the outbox).
        if let Err(e) = client.run_until_queue_empty(SYNC_TIMEOUT).await {
            tracing::warn!("your other devices learn of this trust when this device next connects: {e}");
        }
        let value = json!({ "with": with, "trust": "trusted" });
        ctx.printer.emit(&value, &format!("trusting the current identity key of {with}"))
    })
}

/// `hush status`: the account, and whether the server answers (exit 3 if not).
pub async fn status(ctx: &Ctx, timeout: Duration) -> anyhow::Result<()> {
    with_client!(ctx, |client| {
        let mut events = client.events();
        client.connect().await?;
        let deadline = Instant::now() + timeout;
        let mut reach = Reachability::default();
        let reachable = loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Connection(ConnectionState::Connected))) => break true,
                Ok(Some(Event::Connection(ConnectionState::Disconnected(reason)))) => {
                    reach.last_failure = Some(reason);
                    break false;
                }
                Ok(Some(Event::Connection(ConnectionState::Stopped(reason)))) => {
                    reach.stopped = Some(reason);
                    break false;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break false,
            }
        };
        let status = client.status().await?;
        client.disconnect().await?;
        ctx.printer
            .emit(&output::status_json(&status, Some(reachable)), &output::status_text(&status, Some(reachable)))?;
        if reachable { Ok(()) } else { Err(reach.timeout_error(&ctx.config.server_url, "connecting", timeout).into()) }
    })
}

/// `hush outbox [list | cancel ID | retry ID]`.
pub async fn outbox(ctx: &Ctx, action: Option<OutboxAction>) -> anyhow::Result<()> {
    let parse = |id: &str| {
        MessageId::parse_hex(id.trim())
            .ok_or_else(|| CliError::new(Kind::Usage, format!("{id:?} is not a message id (32 hex digits)")))
    };
    with_client!(ctx, |client| {
        match action {
            None | Some(OutboxAction::List) => {
                let entries = client.outbox().await?;
                if entries.is_empty() && !ctx.printer.json {
                    println!("the outbox is empty");
                }
                for e in &entries {
                    ctx.printer.emit(&output::outbox_json(e), &output::outbox_text(e))?;
                }
                Ok(())
            }
            Some(OutboxAction::Cancel { id }) => {
                let id = parse(&id)?;
                client.cancel(id).await.with_context(|| format!("cannot cancel {id}"))?;
                ctx.printer.emit(&json!({ "id": id.to_string(), "status": "cancelled" }), &format!("cancelled {id}"))
            }
            Some(OutboxAction::Retry { id }) => {
                let id = parse(&id)?;
                client.retry(id).await.with_context(|| format!("cannot retry {id}"))?;
                let text = format!("{id} is queued again; it goes out with the next hush command that connects");
                ctx.printer.emit(&json!({ "id": id.to_string(), "status": "pending" }), &text)
            }
        }
    })
}
