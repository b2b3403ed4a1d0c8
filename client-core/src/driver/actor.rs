//! The actor: owns the machine, runs commands, connections and REST calls one at a time.

use std::sync::Arc;
use std::time::Duration;

use hush_keys::auth::DeviceSigningKey;
use hush_wire::frames::{ClientFrame, client_frame, server_frame};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::rest::{DeviceAuth, Rest};
use super::ws::{self, WsEvent};
use super::{Command, GroupCommand, GroupReply, Reply, Subscribers, now_ms, open_store};
use crate::account::DeviceRegistration;
use crate::error::{ClientError, MachineError};
use crate::machine::{GroupOutcome, Machine, OutgoingRequest, RestAnswer, RestFailure};
use crate::store::{Batch, ClientStore, ContactRow, SqliteStore};
use crate::types::{ClientConfig, ConnectionState, ConversationId, Event, GROUP_PREFIX, Status};

mod presence;

/// How often the machine is ticked (retries, backoff expiry) while connected.
const TICK: Duration = Duration::from_millis(250);
/// Reconnect backoff: first delay and cap.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that stayed up this long resets the backoff; one closed sooner (say, by the
/// server right after a send) makes the next wait longer.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Entry point of the actor thread.
pub(super) fn run(
    config: ClientConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    subscribers: Subscribers,
    ready: oneshot::Sender<Result<(), ClientError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(ClientError::Io(e)));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let actor = match Actor::start(config, subscribers).await {
            Ok(actor) => {
                let _ = ready.send(Ok(()));
                actor
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        actor.run(commands).await;
    });
    // Whatever is left in the set is dropped inside the runtime: HTTP and socket resources
    // deregister from its reactor when dropped, and panic outside it.
    let _inside = runtime.enter();
    drop(local);
}

/// The live connection, if any.
struct Connection {
    generation: u64,
    out: mpsc::UnboundedSender<ClientFrame>,
    /// When authentication succeeded.
    authenticated: Option<Instant>,
}

struct Actor {
    machine: Machine,
    sqlite: SqliteStore,
    config: ClientConfig,
    rest: Rest,
    auth: DeviceAuth,
    subscribers: Subscribers,
    rng: StdRng,
    /// The app asked to stay connected.
    want_online: bool,
    /// Waiters of `run_until_queue_empty`; while any, the actor stays connected too.
    drain_waiters: Vec<oneshot::Sender<Result<(), ClientError>>>,
    draining: bool,
    conn: Option<Connection>,
    generation: u64,
    state: ConnectionState,
    attempt: u32,
    /// Connections in a row that ended before [`STABLE_AFTER`]: the backoff exponent.
    failures: u32,
    reconnect_at: Option<Instant>,
    /// Every task of this actor (connections, REST calls): cancelled and awaited on shutdown.
    tasks: JoinSet<()>,
    ws_tx: mpsc::UnboundedSender<WsEvent>,
    ws_rx: mpsc::UnboundedReceiver<WsEvent>,
    rest_tx: mpsc::UnboundedSender<(u64, Result<RestAnswer, RestFailure>)>,
    rest_rx: mpsc::UnboundedReceiver<(u64, Result<RestAnswer, RestFailure>)>,
    /// Group operations waiting for the server's answer: (reply, what to answer with).
    group_ops: std::collections::HashMap<u64, (Reply<GroupReply>, Then)>,
}

/// A group operation once started.
enum Started {
    /// Waits for the answer to REST call `id`.
    Waiting(u64, Then),
    /// Answered at once.
    Now(GroupReply),
}

/// What a finished group operation answers.
enum Then {
    Done,
    /// The group's info (for a created group: the new one).
    Info(Option<uuid::Uuid>),
}

/// A group named `group:<uuid>` or by the bare uuid.
fn parse_group(s: &str) -> Result<uuid::Uuid, ClientError> {
    let s = s.trim();
    uuid::Uuid::parse_str(s.strip_prefix(GROUP_PREFIX).unwrap_or(s)).map_err(|_| {
        ClientError::Invalid(format!("{s:?} is not a group; write it as group:<uuid> (see `hush group list`)"))
    })
}

impl Actor {
    async fn start(mut config: ClientConfig, subscribers: Subscribers) -> Result<Actor, ClientError> {
        let sqlite = open_store(&config).await?;
        let store: Arc<dyn ClientStore> = Arc::new(sqlite.clone());
        let mut machine = match Machine::load(store).await {
            Ok(Some(machine)) => machine,
            Ok(None) => {
                sqlite.close().await;
                return Err(ClientError::NotRegistered);
            }
            Err(e) => {
                sqlite.close().await;
                return Err(e.into());
            }
        };
        machine.set_prekey_schedule(config.prekey_schedule);
        machine.set_presence_timing(config.presence);
        let account = machine.account();
        if config.server_url.is_empty() {
            config.server_url = account.server_url.clone();
        }
        let seed: [u8; 32] =
            account.auth_key.as_slice().try_into().map_err(|_| ClientError::Invalid("stored auth key".into()))?;
        let auth = DeviceAuth {
            account: account.account_id,
            device_id: account.device_id,
            key: DeviceSigningKey::from_bytes(&seed),
        };
        let rest = Rest::new(&config.server_url, Some(auth.clone()))?;
        let (ws_tx, ws_rx) = mpsc::unbounded_channel();
        let (rest_tx, rest_rx) = mpsc::unbounded_channel();
        Ok(Actor {
            machine,
            sqlite,
            config,
            rest,
            auth,
            subscribers,
            rng: StdRng::from_os_rng(),
            want_online: false,
            drain_waiters: Vec::new(),
            draining: false,
            conn: None,
            generation: 0,
            state: ConnectionState::Offline,
            attempt: 0,
            failures: 0,
            reconnect_at: None,
            tasks: JoinSet::new(),
            ws_tx,
            ws_rx,
            rest_tx,
            rest_rx,
            group_ops: std::collections::HashMap::new(),
        })
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reconnect_at = self.reconnect_at;
            let result = tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Shutdown { reply }) => {
                        self.stop().await;
                        let _ = reply.send(Ok(()));
                        return;
                    }
                    Some(command) => self.command(command).await,
                },
                Some(event) = self.ws_rx.recv() => self.ws_event(event).await,
                Some((id, answer)) = self.rest_rx.recv() => {
                    let now = now_ms();
                    self.machine.rest_response(id, answer, now, &mut self.rng).await
                }
                _ = sleep_until(reconnect_at), if reconnect_at.is_some() => {
                    self.reconnect_at = None;
                    self.open_connection();
                    Ok(())
                }
                _ = tick.tick() => {
                    let now = now_ms();
                    self.machine.tick(now, &mut self.rng).await
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "client step failed");
            }
            self.finish_group_ops().await;
            self.flush();
        }
        self.stop().await;
    }

    /// Closes the connection, cancels every task still running (a REST call in flight, the
    /// connection) and waits until they are gone, then closes the store.
    async fn stop(&mut self) {
        self.say_offline().await;
        self.close_connection();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.sqlite.close().await;
    }

    /// Hands the machine's requests to the connection and REST, and its events to subscribers.
    fn flush(&mut self) {
        for request in self.machine.take_requests() {
            match request {
                OutgoingRequest::Send(req) => self.send_frame(client_frame::Frame::Send(req)),
                OutgoingRequest::GroupSend(req) => self.send_frame(client_frame::Frame::GroupSend(req)),
                OutgoingRequest::Distribute(req) => self.send_frame(client_frame::Frame::Distribute(req)),
                OutgoingRequest::Ack(ack) => self.send_frame(client_frame::Frame::Ack(ack)),
                OutgoingRequest::Rest { id, call } => {
                    let (rest, tx) = (self.rest.clone(), self.rest_tx.clone());
                    self.tasks.spawn_local(async move {
                        let _ = tx.send((id, rest.execute(call).await));
                    });
                }
            }
        }
        for event in self.machine.take_events() {
            if event == Event::QueueEmpty {
                for waiter in self.drain_waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
            }
            self.emit(event);
        }
    }

    fn emit(&self, event: Event) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.retain(|s| s.send(event.clone()).is_ok());
        }
    }

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state.clone();
            self.emit(Event::Connection(state));
        }
    }

    fn send_frame(&mut self, frame: client_frame::Frame) {
        if let Some(conn) = self.conn.as_ref().filter(|c| c.authenticated.is_some()) {
            let _ = conn.out.send(ClientFrame::from(frame));
        }
    }

    fn should_be_online(&self) -> bool {
        self.want_online || self.draining
    }

    fn open_connection(&mut self) {
        if self.conn.is_some() || !self.should_be_online() {
            return;
        }
        self.generation += 1;
        let (out, out_rx) = mpsc::unbounded_channel();
        self.conn = Some(Connection { generation: self.generation, out, authenticated: None });
        self.attempt += 1;
        self.set_state(ConnectionState::Connecting(self.attempt));
        let url = ws::ws_url(&self.config.server_url);
        self.tasks.spawn_local(ws::run(url, self.auth.clone(), self.generation, self.ws_tx.clone(), out_rx));
    }

    fn close_connection(&mut self) {
        // Dropping the sender makes the connection task close the socket.
        self.conn = None;
        self.reconnect_at = None;
        self.machine.disconnected();
    }

    async fn ws_event(&mut self, event: WsEvent) -> Result<(), MachineError> {
        let current = self.conn.as_ref().map(|c| c.generation);
        let now = now_ms();
        match event {
            WsEvent::Connected(g) if Some(g) == current => {
                if let Some(c) = self.conn.as_mut() {
                    c.authenticated = Some(Instant::now());
                }
                self.attempt = 0;
                self.set_state(ConnectionState::Connected);
                self.machine.connected(now, &mut self.rng).await
            }
            WsEvent::Frame(g, frame) if Some(g) == current => match frame {
                server_frame::Frame::Envelope(env) => self.machine.receive_envelope(env, now, &mut self.rng).await,
                server_frame::Frame::QueueEmpty(_) => self.machine.queue_empty(now, &mut self.rng).await,
                server_frame::Frame::SendResponse(r) => self.machine.handle_send_response(r, now, &mut self.rng).await,
                _ => Ok(()),
            },
            WsEvent::Closed(g, ended) if Some(g) == current => {
                let reason = ended.reason.clone();
                tracing::info!(%reason, "connection closed");
                let lasted = self.conn.take().and_then(|c| c.authenticated).map(|at| at.elapsed());
                self.failures = match lasted {
                    Some(up) if up >= STABLE_AFTER => 0,
                    _ => self.failures.saturating_add(1),
                };
                let closed = self.machine.connection_closed(ended.code).await;
                if let Some(stop) = ended.stop_reason(&self.config.server_url) {
                    // Device removed, account unknown, or a copy of this device connected
                    // elsewhere: reconnecting cannot help (or would fight the other copy).
                    tracing::warn!(reason = %stop, "not reconnecting");
                    self.want_online = false;
                    self.draining = false;
                    for waiter in self.drain_waiters.drain(..) {
                        let _ = waiter.send(Err(ClientError::Stopped(stop.clone())));
                    }
                    self.set_state(ConnectionState::Stopped(stop));
                } else if self.should_be_online() {
                    let wait = self.backoff();
                    self.set_state(ConnectionState::Disconnected(format!(
                        "{reason}; reconnecting in {:.1} s",
                        wait.as_secs_f64()
                    )));
                    self.reconnect_at = Some(Instant::now() + wait);
                } else {
                    self.set_state(ConnectionState::Offline);
                }
                closed
            }
            _ => Ok(()), // from an older connection
        }
    }

    /// Exponential backoff with jitter (50%..100% of the step).
    fn backoff(&mut self) -> Duration {
        let step = BACKOFF_START.saturating_mul(1 << self.failures.min(8)).min(BACKOFF_MAX);
        step.mul_f64(self.rng.random_range(0.5..=1.0))
    }

    async fn contact(&mut self, username: &str) -> Result<ContactRow, ClientError> {
        let username = username.trim().to_lowercase();
        if username.is_empty() {
            return Err(ClientError::Invalid("empty username".into()));
        }
        if let Some(c) = self.machine.store().contact_by_username(&username).await? {
            return Ok(c);
        }
        let info = self.rest.lookup_username(&username).await.map_err(|f| match f.status {
            Some(404) => ClientError::UnknownUser(username.clone()),
            _ => ClientError::from(f),
        })?;
        Ok(self.machine.learn_contact(&info).await?)
    }

    async fn command(&mut self, command: Command) -> Result<(), MachineError> {
        let now = now_ms();
        match command {
            Command::Connect { reply } => {
                self.want_online = true;
                self.machine.set_presence_active(self.config.announce_presence);
                self.open_connection();
                let _ = reply.send(Ok(()));
            }
            Command::Disconnect { reply } => {
                self.say_offline().await;
                self.want_online = false;
                if !self.draining {
                    self.close_connection();
                    self.set_state(ConnectionState::Offline);
                }
                let _ = reply.send(Ok(()));
            }
            Command::SendText { to, text, reply } => {
                let result = self.send_text(&to, &text, now).await;
                let _ = reply.send(result);
            }
            Command::SendTyping { to, reply, .. } if to.trim().starts_with(GROUP_PREFIX) => {
                let _ =
                    reply.send(Err(ClientError::Invalid("typing indicators in groups are not supported yet".into())));
            }
            Command::SendTyping { to, typing, reply } => {
                let result = match self.contact(&to).await {
                    Ok(c) => self.machine.send_typing(&c, typing, now, &mut self.rng).await.map_err(ClientError::from),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Presence { peer, reply } => {
                let _ = reply.send(self.presence_of(&peer).await);
            }
            Command::SetPresenceSharing { on, reply } => {
                let result = self.machine.set_presence_sharing(on, now, &mut self.rng).await;
                let _ = reply.send(result.map_err(client_error));
            }
            Command::PresenceSharing { reply } => {
                let _ = reply.send(Ok(self.machine.presence_sharing()));
            }
            Command::MarkRead { peer, reply } if peer.trim().starts_with(GROUP_PREFIX) => {
                let result = match parse_group(&peer) {
                    Ok(g) => self.machine.mark_group_read(g, now, &mut self.rng).await.map_err(client_error),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::MarkRead { peer, reply } => {
                let result = match self.contact(&peer).await {
                    Ok(c) => self.machine.mark_read(&c, now, &mut self.rng).await.map_err(ClientError::from),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Retry { id, reply } => {
                let result = match self.machine.retry(id, now, &mut self.rng).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ClientError::NoSuchMessage(id.to_string())),
                    Err(e) => Err(client_error(e)),
                };
                let _ = reply.send(result);
            }
            Command::Cancel { id, reply } => {
                let result = match self.machine.cancel(id, now, &mut self.rng).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ClientError::NoSuchMessage(id.to_string())),
                    Err(e) => Err(client_error(e)),
                };
                let _ = reply.send(result);
            }
            Command::Outbox { reply } => {
                let _ = reply.send(self.machine.outbox().await.map_err(ClientError::from));
            }
            Command::History { peer, limit, reply } if peer.trim().starts_with(GROUP_PREFIX) => {
                let result = match parse_group(&peer) {
                    Ok(g) => self.machine.group_history(g, limit).await.map_err(ClientError::from),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::History { peer, limit, reply } => {
                let result = match self.contact(&peer).await {
                    Ok(c) => self.machine.history(&c, limit).await.map_err(ClientError::from),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Unread { peer, reply } => {
                let conversation = if peer.trim().starts_with(GROUP_PREFIX) {
                    parse_group(&peer).map(ConversationId::Group)
                } else {
                    self.contact(&peer).await.map(|c| ConversationId::Direct(c.account_id))
                };
                let result = match conversation {
                    Ok(c) => self.machine.unread(c).await.map_err(ClientError::from),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::MessagesAfter { after, limit, reply } => {
                let _ = reply.send(self.machine.messages_after(after, limit).await.map_err(ClientError::from));
            }
            Command::Contacts { reply } => {
                let _ = reply.send(self.machine.contacts().await.map_err(ClientError::from));
            }
            Command::Search { query, options, reply } => {
                let result = match options.conversation.as_deref() {
                    Some(name) => match self.machine.local_conversation(name).await {
                        Ok(Some(c)) => Ok(Some(c)),
                        Ok(None) => Err(ClientError::UnknownUser(name.trim().to_lowercase())),
                        Err(e) => Err(client_error(e)),
                    },
                    None => Ok(None),
                };
                let result = match result {
                    Ok(c) => self.machine.search(&query, c, options.limit).await.map_err(client_error),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::DeleteMessage { id, reply } => {
                let result = match self.machine.delete_message(id).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ClientError::NoSuchMessage(id.to_string())),
                    Err(e) => Err(client_error(e)),
                };
                let _ = reply.send(result);
            }
            Command::SafetyNumber { peer, reply } => {
                let result = match self.contact(&peer).await {
                    Ok(c) => match self.machine.safety_number(&c).await {
                        Ok(Some(n)) => Ok(n),
                        Ok(None) => Err(ClientError::UnknownUser(peer)),
                        Err(e) => Err(e.into()),
                    },
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Trust { peer, reply } => {
                let result = match self.contact(&peer).await {
                    Ok(c) => self.machine.trust(&c, now, &mut self.rng).await.map_err(ClientError::from),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::WaitingFor { reply } => {
                let _ = reply.send(self.machine.waiting_for().await.map_err(ClientError::from));
            }
            // Rare calls made by a person: answered inline, as contact lookups are.
            Command::SetPush { target, reply } => {
                let result = match &target {
                    Some(t) => self.rest.set_push(t).await,
                    None => self.rest.remove_push().await,
                };
                let _ = reply.send(result.map_err(ClientError::from));
            }
            Command::Devices { reply } => {
                let result = self.devices().await;
                let _ = reply.send(result);
            }
            Command::RemoveDevice { id, reply } => {
                let result = self.remove_device(id, now).await;
                let _ = reply.send(result);
            }
            Command::RenameDevice { name, reply } => {
                let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
                let _ = reply.send(self.rest.rename_device(name.as_deref()).await.map_err(ClientError::from));
            }
            Command::Push { reply } => {
                let _ = reply.send(self.rest.push().await.map_err(ClientError::from));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status().await);
            }
            Command::WaitQueueEmpty { reply } => {
                let (tx, rx) = oneshot::channel();
                self.draining = true;
                if self.machine.is_idle().await? {
                    let _ = tx.send(Ok(()));
                } else {
                    self.drain_waiters.push(tx);
                    self.open_connection();
                }
                let _ = reply.send(Ok(rx));
            }
            Command::EndDrain { reply } => {
                self.drain_waiters.retain(|w| !w.is_closed());
                if self.drain_waiters.is_empty() {
                    self.draining = false;
                    if !self.want_online {
                        self.close_connection();
                        self.set_state(ConnectionState::Offline);
                    }
                }
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown { reply } => {
                let _ = reply.send(Ok(()));
            }
            Command::AddDevice { reply } => {
                let _ = reply.send(self.add_device(now).await);
            }
            Command::ApproveLink { code, options, reply } => {
                let _ = reply.send(self.approve_link(&code, options).await);
            }
            Command::AnnounceLinked { name, reply } => {
                let _ = reply.send(self.machine.announce_linked(name, now, &mut self.rng).await.map_err(client_error));
            }
            Command::Group { op, reply } => match self.group_command(op).await {
                Ok(Started::Waiting(id, then)) => {
                    self.group_ops.insert(id, (reply, then));
                }
                Ok(Started::Now(answer)) => {
                    let _ = reply.send(Ok(answer));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
        Ok(())
    }

    async fn contacts_named(&mut self, names: &[String]) -> Result<Vec<ContactRow>, ClientError> {
        let mut out = Vec::new();
        for n in names {
            if n.trim().eq_ignore_ascii_case(&self.machine.account().username) {
                continue;
            }
            out.push(self.contact(n).await?);
        }
        Ok(out)
    }

    /// Starts a group operation: it waits for the server's answer to a REST call, or is
    /// answered at once.
    async fn group_command(&mut self, op: GroupCommand) -> Result<Started, ClientError> {
        let wait = |id: u64, then: Then| Started::Waiting(id, then);
        Ok(match op {
            GroupCommand::Create { title, members } => {
                let contacts = self.contacts_named(&members).await?;
                wait(
                    self.machine.create_group(&title, &contacts, &mut self.rng).await.map_err(client_error)?,
                    Then::Info(None),
                )
            }
            GroupCommand::Add { group, members } => {
                let g = parse_group(&group)?;
                let contacts = self.contacts_named(&members).await?;
                wait(self.machine.add_members(g, &contacts).await.map_err(client_error)?, Then::Info(Some(g)))
            }
            GroupCommand::Remove { group, member } => {
                let g = parse_group(&group)?;
                let c = self.contact(&member).await?;
                wait(self.machine.remove_member(g, c.account_id).await.map_err(client_error)?, Then::Info(Some(g)))
            }
            GroupCommand::Leave { group } => {
                let g = parse_group(&group)?;
                wait(self.machine.leave_group(g).await.map_err(client_error)?, Then::Done)
            }
            GroupCommand::MembersCanAdd { group, on } => {
                let g = parse_group(&group)?;
                wait(self.machine.set_members_can_add(g, on).await.map_err(client_error)?, Then::Info(Some(g)))
            }
            GroupCommand::Delete { group } => {
                let g = parse_group(&group)?;
                wait(self.machine.delete_group(g).await.map_err(client_error)?, Then::Done)
            }
            GroupCommand::Role { group, member, role } => {
                let g = parse_group(&group)?;
                let c = self.contact(&member).await?;
                wait(self.machine.set_role(g, c.account_id, role).await.map_err(client_error)?, Then::Info(Some(g)))
            }
            GroupCommand::Title { group, title } => {
                let g = parse_group(&group)?;
                let id = self.machine.set_group_title(g, &title, &mut self.rng).await.map_err(client_error)?;
                wait(id, Then::Info(Some(g)))
            }
            GroupCommand::Accept { group } => {
                let g = parse_group(&group)?;
                self.machine.accept_invite(g).await.map_err(client_error)?;
                Started::Now(GroupReply::Info(self.group_info(g).await?))
            }
            GroupCommand::Decline { group } => {
                let g = parse_group(&group)?;
                wait(self.machine.decline_invite(g).await.map_err(client_error)?, Then::Done)
            }
            GroupCommand::Info { group } => {
                Started::Now(GroupReply::Info(self.group_info(parse_group(&group)?).await?))
            }
            GroupCommand::List => Started::Now(GroupReply::List(self.machine.groups().await?)),
            GroupCommand::Invites => Started::Now(GroupReply::List(self.machine.invites().await?)),
        })
    }

    async fn group_info(&self, group: uuid::Uuid) -> Result<crate::types::GroupInfo, ClientError> {
        match self.machine.group_info(group).await? {
            Some(info) => Ok(info),
            None => Err(ClientError::Machine(MachineError::UnknownGroup(ConversationId::group_name(group)))),
        }
    }

    /// Answers group operations the server has answered.
    async fn finish_group_ops(&mut self) {
        for (id, outcome) in self.machine.take_completions() {
            let Some((reply, then)) = self.group_ops.remove(&id) else { continue };
            let result = match (outcome, then) {
                (Err(e), _) => Err(client_error(e)),
                (Ok(GroupOutcome::Created(g)), _) | (Ok(GroupOutcome::Done), Then::Info(Some(g))) => {
                    self.group_info(g).await.map(GroupReply::Info)
                }
                (Ok(GroupOutcome::Done), _) => Ok(GroupReply::Done),
            };
            let _ = reply.send(result);
        }
    }

    async fn send_text(&mut self, to: &str, text: &str, now: u64) -> Result<crate::types::MessageId, ClientError> {
        // Checked before the lookup too, so a typo costs no server round trip.
        if text.is_empty() {
            return Err(ClientError::Invalid("empty message".into()));
        }
        if to.trim().starts_with(GROUP_PREFIX) {
            let group = parse_group(to)?;
            return self.machine.enqueue_group_text(group, text, now, &mut self.rng).await.map_err(client_error);
        }
        if to.trim().eq_ignore_ascii_case(&self.machine.account().username) {
            return Err(ClientError::Invalid("cannot send a message to yourself".into()));
        }
        let contact = self.contact(to).await?;
        self.machine.enqueue_text(&contact, text, now, &mut self.rng).await.map_err(client_error)
    }

    /// Registers another device of this account (`POST /v1/devices`, signed by this device) and
    /// answers what that device stores.
    async fn add_device(&mut self, now: u64) -> Result<Batch, ClientError> {
        let registration = DeviceRegistration::generate(self.machine.account(), now, &mut self.rng)?;
        let response = self.rest.add_device(&registration.request).await?;
        tracing::info!(device_id = response.device_id, "device added to this account");
        Ok(registration.finish(&response).1)
    }

    /// Approves a new device (`hush link-approve`): a link token from the server (primary
    /// device only), sealed with the identity key pair to the device's link code and handed to
    /// the provisioning address it waits on.
    async fn approve_link(
        &mut self,
        code: &hush_keys::provision::LinkCode,
        options: crate::types::LinkOptions,
    ) -> Result<(), ClientError> {
        let archive =
            if options.history { self.upload_history(options.messages_per_conversation).await? } else { None };
        let token = self.rest.link_token().await?;
        let link_token: [u8; 32] = token.token.0.as_slice().try_into().map_err(|_| {
            ClientError::Invalid(format!("the server's link token has {} bytes, not 32", token.token.0.len()))
        })?;
        let account = self.machine.account();
        let message = hush_keys::provision::ProvisionMessage {
            identity: libsignal_protocol::IdentityKeyPair::try_from(&account.identity_key_pair[..])
                .map_err(MachineError::from)?,
            account_id: account.account_id,
            username: account.username.clone(),
            link_token,
            archive,
            profile_name: None,
        };
        let sealed = hush_keys::provision::seal_provision(code, &message, &mut self.rng)
            .map_err(|e| ClientError::Invalid(format!("cannot seal the link message: {e}")))?;
        let body = hush_wire::api::ProvisioningBody { body: hush_wire::api::B64(sealed) };
        self.rest.provision(code.address(), &body).await.map_err(|f| match (f.status, f.code.as_str()) {
            (Some(404), "unknown_channel") => ClientError::Invalid(
                "no new device is waiting for this code: it expired, was used, or its `hush link` stopped; \
                 run `hush link` again on the new device"
                    .into(),
            ),
            _ => ClientError::from(f),
        })?;
        tracing::info!("link approved");
        Ok(())
    }

    /// Builds the history archive, seals and uploads it; `None` if the server keeps no
    /// archives (an older server: the link goes on without history).
    async fn upload_history(
        &mut self,
        per_conversation: usize,
    ) -> Result<Option<hush_keys::provision::ArchiveRef>, ClientError> {
        use crate::machine::archive;
        use hush_keys::provision::{ARCHIVE_CHUNK_OVERHEAD, ArchiveKey, ArchiveRef, MAX_ARCHIVE_CHUNK_PLAINTEXT};
        let created = match self.rest.create_archive().await {
            Ok(a) => a,
            Err(f) if f.status == Some(404) && f.code == "not_found" => {
                tracing::warn!("the server keeps no history archives: linking without history");
                return Ok(None);
            }
            Err(f) => return Err(f.into()),
        };
        let account = self.machine.account().account_id;
        let history = archive::build(self.machine.store().as_ref(), account, per_conversation, now_ms())
            .await
            .map_err(|e| ClientError::Invalid(format!("cannot build the history archive: {e}")))?;
        let key = ArchiveKey::generate(&mut self.rng);
        let chunk =
            (created.chunk_bytes as usize).saturating_sub(ARCHIVE_CHUNK_OVERHEAD).min(MAX_ARCHIVE_CHUNK_PLAINTEXT);
        let (chunks, messages) =
            archive::seal_within(history, &key, chunk, created.max_bytes, &mut self.rng).map_err(|e| {
                ClientError::Invalid(format!("{e}; approve the link without history (`history: false`) instead"))
            })?;
        let id = created.archive_id;
        let count = u32::try_from(chunks.len()).map_err(|_| ClientError::Invalid("too many archive chunks".into()))?;
        for (chunk, index) in chunks.into_iter().zip(0u32..) {
            self.rest.put_archive_chunk(&id, index, chunk).await?;
        }
        self.rest.complete_archive(&id, count).await?;
        tracing::info!(chunks = count, messages, "history archive uploaded");
        Ok(Some(ArchiveRef { id, key }))
    }

    /// The account's devices from the server; the machine learns the list too, so a device
    /// added since is sent to at once.
    async fn devices(&mut self) -> Result<Vec<crate::types::DeviceEntry>, ClientError> {
        let account = self.machine.account().account_id;
        let list = self.rest.devices(account).await?;
        self.machine.own_devices_listed(&list);
        let this = self.machine.account().device_id;
        Ok(list
            .devices
            .into_iter()
            .map(|d| crate::types::DeviceEntry {
                id: d.device_id,
                name: d.name,
                created_at: d.created_at,
                last_seen: d.last_seen,
                this_device: d.device_id == this,
            })
            .collect())
    }

    /// Removes device `id` on the server. This device: stops for good, as when removed from
    /// elsewhere. Another one: this device forgets its sessions with it.
    async fn remove_device(&mut self, id: u32, now: u64) -> Result<(), ClientError> {
        self.rest.remove_device(id).await?;
        if id != self.machine.account().device_id {
            self.machine.own_device_removed(id, now, &mut self.rng).await?;
            return Ok(());
        }
        let stop = "this device was removed from its account (by itself); it can no longer send or receive".to_owned();
        self.want_online = false;
        self.draining = false;
        self.close_connection();
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(Err(ClientError::Stopped(stop.clone())));
        }
        self.set_state(ConnectionState::Stopped(stop));
        Ok(())
    }

    async fn status(&self) -> Result<Status, ClientError> {
        let (pending, failed) = self.machine.store().outbox_counts().await?;
        let account = self.machine.account();
        Ok(Status {
            username: account.username.clone(),
            account_id: account.account_id,
            device_id: account.device_id,
            server_url: self.config.server_url.clone(),
            connection: self.state.clone(),
            outbox_pending: pending,
            outbox_failed: failed,
        })
    }
}

fn client_error(e: MachineError) -> ClientError {
    match e {
        MachineError::IdentityUntrusted(u) => ClientError::IdentityUntrusted(u),
        MachineError::TooLarge(t) => ClientError::TooLarge(t),
        MachineError::InFlight(id) => ClientError::MessageInFlight(id),
        MachineError::Invalid(why) => ClientError::Invalid(why),
        MachineError::Rest(f) => ClientError::from(f),
        other => ClientError::Machine(other),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
