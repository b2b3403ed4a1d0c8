//! A connection driven in-process over an in-memory socket, on tokio's paused clock: the
//! timeouts (ping, write, shutdown, authentication) are tested without waiting for them.
//!
//! The clock is paused only once the connection has done its database reads: a paused
//! runtime that waits on SQLite's worker thread looks idle and jumps its clock to the next
//! timer (sqlx's own acquire timeout among them). So each test sets up, fills mailboxes and
//! goes online in real time, then pauses.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::task::{Context, Poll};

use hush_keys::auth::DeviceSigningKey;
use hush_wire::frames::{Auth, ClientFrame, decode_server_frame};
use tokio::sync::mpsc;

use super::*;
use crate::commit::SendResult;
use crate::config::Config;
use crate::store::{NewAccount, NewDeviceRecord, OutgoingMessage, RecipientBatch, SendItem, SignedKey, Write};

/// The server's end of an in-memory socket. Frames it sends are queued for the peer at once
/// (as a kernel buffer would take them). `flushes` counts the flushes that may still complete
/// (negative: all); after them flushing never completes, which is what a socket whose peer
/// stopped reading looks like to the writer.
struct Pipe {
    inbox: mpsc::UnboundedReceiver<Message>,
    outbox: mpsc::UnboundedSender<Message>,
    flushes: Arc<AtomicI64>,
    /// Told when a flush first fails to complete.
    stuck: Arc<tokio::sync::Notify>,
}

/// The test's end: what the client sends and receives.
struct Peer {
    to_server: mpsc::UnboundedSender<Message>,
    from_server: mpsc::UnboundedReceiver<Message>,
    stuck: Arc<tokio::sync::Notify>,
}

fn pipe(flushes: i64) -> (Pipe, Peer) {
    let (to_server, inbox) = mpsc::unbounded_channel();
    let (outbox, from_server) = mpsc::unbounded_channel();
    let stuck = Arc::new(tokio::sync::Notify::new());
    let flushes = Arc::new(AtomicI64::new(flushes));
    (Pipe { inbox, outbox, flushes, stuck: stuck.clone() }, Peer { to_server, from_server, stuck })
}

impl Stream for Pipe {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbox.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<Message> for Pipe {
    type Error = axum::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), axum::Error> {
        let _ = self.outbox.send(msg);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        let left = self.flushes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n != 0).then_some(n - 1));
        if left.is_ok() {
            Poll::Ready(Ok(()))
        } else {
            self.stuck.notify_one();
            Poll::Pending
        }
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl Peer {
    fn send(&self, f: client_frame::Frame) {
        let _ = self.to_server.send(Message::Binary(ClientFrame::from(f).to_bytes().into()));
    }

    /// The next server frame, answering pings on the way (as a live client's library does).
    async fn frame(&mut self) -> server_frame::Frame {
        loop {
            match self.from_server.recv().await {
                Some(Message::Binary(b)) => return decode_server_frame(&b).unwrap_or_else(|e| panic!("{e}")),
                Some(Message::Ping(p)) => {
                    let _ = self.to_server.send(Message::Pong(p));
                }
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// The close frame the server queued, skipping anything before it, within `within` of (virtual) time.
    async fn close(&mut self, within: Duration) -> (u16, String) {
        let wait = async {
            loop {
                match self.from_server.recv().await {
                    Some(Message::Close(Some(c))) => return (c.code, c.reason.to_string()),
                    Some(_) => {}
                    None => panic!("the connection ended without a close frame"),
                }
            }
        };
        tokio::time::timeout(within, wait).await.unwrap_or_else(|_| panic!("no close within {within:?}"))
    }
}

struct Scene {
    state: AppState,
    signing: DeviceSigningKey,
    key: DeviceKey,
    sender: DeviceKey,
    mailbox: crate::store::MailboxId,
    _dir: tempfile::TempDir,
}

fn key(id: u32, public_key: Vec<u8>) -> SignedKey {
    SignedKey { id, public_key, signature: vec![0; 64] }
}

/// Registers an account with one device. The store checks no keys, so placeholder prekeys
/// do (these tests never fetch bundles).
async fn register(state: &AppState) -> (DeviceSigningKey, DeviceKey) {
    let signing = DeviceSigningKey::generate(&mut rand::rng());
    let account = Uuid::new_v4();
    let device = NewDeviceRecord {
        registration_id: 7,
        auth_key: signing.public().to_bytes(),
        name: None,
        signed_prekey: key(1, vec![5; 33]),
        kyber_last_resort: key(2, vec![8; 1569]),
        one_time_prekeys: vec![],
        one_time_kyber_prekeys: vec![],
        created_at: now_ms(),
    };
    let username = format!("t{}", &account.simple().to_string()[..12]);
    let new = NewAccount { id: account, username, identity_key: vec![5; 33], device };
    state.store.create_account(&new).await.unwrap_or_else(|e| panic!("{e}"));
    (signing, DeviceKey { account, device_id: 1 })
}

/// A server state on SQLite with one device to connect and another that sends to it.
async fn scene(tweak: impl FnOnce(&mut Config)) -> Scene {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = Config::for_data_dir(dir.path());
    tweak(&mut config);
    let state = crate::serve::build_state(config).await.unwrap_or_else(|e| panic!("{e}")).0;
    let (signing, key) = register(&state).await;
    let (_, sender) = register(&state).await;
    let mailbox = state.store.device(key).await.ok().flatten().unwrap_or_else(|| panic!("device not stored")).mailbox;
    Scene { state, signing, key, sender, mailbox, _dir: dir }
}

impl Scene {
    fn connect(&self) -> (Peer, tokio::task::JoinHandle<()>) {
        self.connect_with(-1)
    }

    fn connect_with(&self, flushes: i64) -> (Peer, tokio::task::JoinHandle<()>) {
        let (pipe, peer) = pipe(flushes);
        let ticket =
            self.state.admission.admit(std::net::Ipv4Addr::LOCALHOST.into()).unwrap_or_else(|e| panic!("{e:?}"));
        (peer, tokio::spawn(run(self.state.clone(), pipe, ticket)))
    }

    /// Connects, authenticates and reads up to `QueueEmpty`.
    async fn online(&self) -> (Peer, tokio::task::JoinHandle<()>) {
        let (mut peer, task) = self.connect();
        let server_frame::Frame::Challenge(c) = peer.frame().await else { panic!("no challenge") };
        self.answer(&peer, &c.nonce);
        assert!(matches!(peer.frame().await, server_frame::Frame::AuthOk(_)));
        loop {
            if matches!(peer.frame().await, server_frame::Frame::QueueEmpty(_)) {
                break;
            }
        }
        (peer, task)
    }

    /// Authenticates with a socket that stalls after the `Challenge` and `AuthOk` flushes,
    /// and returns once the server is stuck flushing the backlog (after its database reads).
    async fn connect_stalled(&self) -> (Peer, tokio::task::JoinHandle<()>) {
        let (mut peer, task) = self.connect_with(2);
        let server_frame::Frame::Challenge(c) = peer.frame().await else { panic!("no challenge") };
        self.answer(&peer, &c.nonce);
        assert!(matches!(peer.frame().await, server_frame::Frame::AuthOk(_)));
        tokio::time::timeout(Duration::from_secs(10), peer.stuck.notified())
            .await
            .unwrap_or_else(|_| panic!("the server never tried to flush the backlog"));
        (peer, task)
    }

    fn answer(&self, peer: &Peer, nonce: &[u8]) {
        let signature = self.signing.sign_ws_challenge(nonce, self.key.account, self.key.device_id);
        peer.send(client_frame::Frame::Auth(Auth {
            account_id: self.key.account.as_bytes().to_vec().into(),
            device_id: self.key.device_id,
            signature: signature.to_vec().into(),
        }));
    }

    /// Commits `n` envelopes of `size` bytes to the device's own mailbox.
    async fn fill_mailbox(&self, n: usize, size: usize) {
        for _ in 0..n {
            let recipients = vec![RecipientBatch {
                account: self.key.account,
                messages: vec![OutgoingMessage {
                    device_id: 1,
                    registration_id: 7,
                    kind: 1,
                    content: bytes::Bytes::from(vec![1; size]),
                }],
            }];
            let now = now_ms();
            let item = SendItem {
                sender: self.sender,
                recipients,
                server_ts: now,
                expires_at: now + 3_600_000,
                idempotency_key: None,
            };
            let reply = self
                .state
                .committer
                .write(Write::Direct(item), crate::push::Urgency::Urgent)
                .await
                .unwrap_or_else(|_| panic!("writer gone"));
            assert!(matches!(reply.await, Ok(SendResult::Stored { .. })));
        }
    }

    async fn stored(&self) -> usize {
        self.state.store.fetch(self.mailbox, 0, 10_000).await.unwrap_or_else(|e| panic!("{e}")).len()
    }
}

async fn ended(task: tokio::task::JoinHandle<()>, within: Duration) {
    tokio::time::timeout(within, task)
        .await
        .unwrap_or_else(|_| panic!("the connection did not end within {within:?}"))
        .unwrap_or_else(|e| panic!("connection task failed: {e}"));
}

#[tokio::test]
async fn a_silent_peer_is_closed_with_ping_timeout_after_two_intervals() {
    let s = scene(|c| c.ping_interval = Duration::from_secs(30)).await;
    let (mut peer, task) = s.online().await;
    tokio::time::pause();
    let start = Instant::now();
    // From here the peer reads nothing and so answers no ping.
    let (code, reason) = peer.close(Duration::from_secs(200)).await;
    assert_eq!((code, reason.as_str()), (close::PING_TIMEOUT, close::REASON_PING_TIMEOUT));
    let silent_for = start.elapsed();
    // (The peer last spoke just before `start`.)
    assert!(silent_for >= Duration::from_secs(59), "closed after {silent_for:?}, before two ping intervals");
    assert!(silent_for <= Duration::from_secs(95), "closed only after {silent_for:?}");
    ended(task, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let s = scene(|c| c.ping_interval = Duration::from_secs(30)).await;
    let (mut peer, task) = s.online().await;
    tokio::time::pause();
    // Ten ping intervals in which the peer answers every ping and sends nothing else.
    let quiet = tokio::time::timeout(Duration::from_secs(300), peer.frame()).await;
    assert!(quiet.is_err(), "the server sent a frame to an idle peer: {quiet:?}");
    assert!(!task.is_finished(), "a live peer was disconnected");
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_as_a_slow_consumer_and_keeps_its_envelopes() {
    let s = scene(|c| {
        c.write_timeout = Duration::from_secs(10);
        c.ping_interval = Duration::from_secs(3600);
    })
    .await;
    s.fill_mailbox(5, 1024).await;
    let (peer, task) = s.connect_stalled().await;
    let mut peer = peer;
    tokio::time::pause();
    let start = Instant::now();
    let (code, reason) = peer.close(Duration::from_secs(60)).await;
    assert_eq!((code, reason.as_str()), (close::SLOW_CONSUMER, close::REASON_SLOW_CONSUMER));
    ended(task, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(took <= Duration::from_secs(10 + 2 * 2), "closed after {took:?}");
    tokio::time::resume(); // before reading the database again
    assert_eq!(s.stored().await, 5, "undelivered envelopes must stay in the mailbox");
    assert!(!s.state.hub.is_connected(s.key), "the closed connection left the routing table");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_stuck_write() {
    let s = scene(|c| {
        c.write_timeout = Duration::from_secs(600);
        c.ping_interval = Duration::from_secs(3600);
    })
    .await;
    s.fill_mailbox(1, 100).await;
    let (_peer, task) = s.connect_stalled().await;
    tokio::time::pause();
    // The connection is stuck in its write.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!task.is_finished());
    let start = Instant::now();
    s.state.shutdown.cancel();
    ended(task, CLOSE_GRACE * 2).await;
    assert!(start.elapsed() <= CLOSE_GRACE * 2, "shutdown waited {:?} for a stuck write", start.elapsed());
}

#[tokio::test]
async fn abort_drops_a_connection_at_once() {
    let s = scene(|c| c.ping_interval = Duration::from_secs(3600)).await;
    let (_peer, task) = s.online().await;
    s.state.abort.cancel();
    ended(task, Duration::from_millis(1)).await;
    assert!(!s.state.hub.is_connected(s.key));
}

#[tokio::test]
async fn the_oldest_handshake_is_dropped_for_a_new_one_when_the_budget_is_full() {
    let s = scene(|c| c.limits.max_handshakes = 2).await;
    let (mut first, first_task) = s.connect();
    let (_second, _t2) = s.connect();
    assert!(matches!(first.frame().await, server_frame::Frame::Challenge(_)));
    // A third handshake pushes out the first, which never authenticated.
    let (mut third, _t3) = s.connect();
    let (code, reason) = first.close(Duration::from_secs(1)).await;
    assert_eq!((code, reason.as_str()), (close::TRY_AGAIN_LATER, close::REASON_BUSY));
    ended(first_task, Duration::from_secs(5)).await;
    assert!(matches!(third.frame().await, server_frame::Frame::Challenge(_)));
    assert_eq!(s.state.admission.handshaking(), 2);
}

#[tokio::test]
async fn a_handshake_that_never_authenticates_times_out() {
    let s = scene(|c| c.auth_timeout = Duration::from_secs(10)).await;
    let (mut peer, task) = s.connect();
    tokio::time::pause();
    let start = Instant::now();
    let (code, reason) = peer.close(Duration::from_secs(30)).await;
    assert_eq!((code, reason.as_str()), (close::AUTH_TIMEOUT, close::REASON_AUTH_TIMEOUT));
    assert!(start.elapsed() >= Duration::from_secs(10));
    ended(task, Duration::from_secs(5)).await;
    assert_eq!((s.state.admission.open(), s.state.admission.handshaking()), (0, 0), "its slots were released");
}

/// The state machine each connection task carries is most of what an idle connection
/// costs beyond its buffers (1.5 KiB today; the idle target is 2 KiB per connection in
/// all). A change that inlines a large future into the loop fails here, not in production.
#[tokio::test]
async fn connection_task_stays_small() {
    let s = scene(|_| {}).await;
    let (pipe, _peer) = pipe(-1);
    let ticket = s.state.admission.admit(std::net::Ipv4Addr::LOCALHOST.into()).unwrap_or_else(|e| panic!("{e:?}"));
    let fut = run(s.state.clone(), pipe, ticket);
    let size = std::mem::size_of_val(&fut);
    assert!(size <= 2048, "a connection's task is {size} bytes; box large, rare futures (auth, fetch, close)");
}

/// A database that cannot answer during authentication is the server's fault: the client is
/// told to retry (`1011`), not that its account is unknown (`4001`, after which it stops).
#[tokio::test]
async fn a_failed_device_lookup_is_a_server_error_not_an_auth_failure() {
    use sqlx::Connection as _;
    let s = scene(|_| {}).await;
    let url = format!("sqlite://{}", s._dir.path().join("hush.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("ALTER TABLE devices RENAME TO devices_away").execute(&mut db).await.unwrap_or_else(|e| panic!("{e}"));
    let (mut peer, task) = s.connect();
    let server_frame::Frame::Challenge(c) = peer.frame().await else { panic!("no challenge") };
    s.answer(&peer, &c.nonce);
    let (code, reason) = peer.close(Duration::from_secs(30)).await;
    assert_eq!((code, reason.as_str()), (close::INTERNAL, close::REASON_INTERNAL));
    ended(task, Duration::from_secs(5)).await;

    // The same device with a bad signature, once the database answers again, is refused.
    sqlx::query("ALTER TABLE devices_away RENAME TO devices").execute(&mut db).await.unwrap_or_else(|e| panic!("{e}"));
    let (mut peer, task) = s.connect();
    let server_frame::Frame::Challenge(_) = peer.frame().await else { panic!("no challenge") };
    s.answer(&peer, &[0u8; 32]);
    let (code, _) = peer.close(Duration::from_secs(30)).await;
    assert_eq!(code, close::AUTH_FAILED);
    ended(task, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn group_frames_go_to_their_modules_and_group_envelopes_carry_their_position() {
    use hush_wire::frames::{GroupSendRequest, SendErrorCode};

    use crate::store::{DistributeItem, GroupSendItem, NewGroup};
    let s = scene(|_| {}).await;
    let now = now_ms();
    let group = NewGroup {
        id: Uuid::new_v4(),
        owner: s.sender.account,
        members: vec![s.key.account],
        title: Vec::new(),
        description: Vec::new(),
        avatar: Vec::new(),
        members_can_add: false,
        server_ts: now,
        expires_at: now + 3_600_000,
        max_members: 10,
        read_above: 100,
    };
    let g = s.state.store.create_group(&group).await.unwrap_or_else(|e| panic!("{e}")).group;
    let to_peer = RecipientBatch {
        account: s.key.account,
        messages: vec![OutgoingMessage {
            device_id: 1,
            registration_id: 7,
            kind: 1,
            content: bytes::Bytes::from("skdm"),
        }],
    };
    let write = |w| async {
        s.state.committer.write(w, crate::push::Urgency::Urgent).await.unwrap_or_else(|_| panic!("writer gone")).await
    };
    let distribution = DistributeItem {
        sender: s.sender,
        group: g,
        epoch: 1,
        recipients: vec![to_peer],
        server_ts: now,
        expires_at: now + 3_600_000,
        idempotency_key: None,
    };
    assert!(matches!(write(Write::Distribute(distribution)).await, Ok(SendResult::Stored { group_seq: None, .. })));
    let (mut peer, _task) = s.online().await;

    let message = GroupSendItem {
        sender: s.sender,
        group: g,
        epoch: 1,
        content: bytes::Bytes::from("skm"),
        server_ts: now,
        expires_at: now + 3_600_000,
        idempotency_key: None,
    };
    assert!(matches!(write(Write::Group(message)).await, Ok(SendResult::Stored { group_seq: Some(2), .. })));
    let server_frame::Frame::Envelope(e) = peer.frame().await else { panic!("no envelope pushed") };
    assert_eq!((e.group_id.as_ref(), e.group_seq, e.content.as_ref()), (g.as_bytes().as_slice(), 2, b"skm".as_slice()));

    // The peer itself has distributed nothing: its own group send is refused, naming the sender.
    let request = GroupSendRequest {
        request_id: 9,
        group_id: g.as_bytes().to_vec().into(),
        epoch: 1,
        content: bytes::Bytes::from("mine"),
        idempotency_key: bytes::Bytes::new(),
        urgent: false,
    };
    peer.send(client_frame::Frame::GroupSend(request));
    let server_frame::Frame::SendResponse(r) = peer.frame().await else { panic!("no answer") };
    let Some(send_response::Result::Error(err)) = r.result else { panic!("not refused: {r:?}") };
    assert_eq!((r.request_id, err.code(), err.current_epoch), (9, SendErrorCode::MissingDistributions, 1));
    assert_eq!(err.mismatches[0].missing, [1]);
}

/// The client gives up on a login whose device lookup is slow and opens a new socket; if
/// the abandoned socket's login completes after the new one's, the abandoned one is the
/// stale connection: it is closed with `connected_elsewhere`, and the newer one stays
/// (a client that gets `4003` on its live socket stops reconnecting).
#[tokio::test]
async fn a_late_login_of_an_abandoned_socket_does_not_replace_the_newer_connection() {
    let s = scene(|c| c.ping_interval = Duration::from_secs(3600)).await;
    let (mut abandoned, abandoned_task) = s.connect();
    let server_frame::Frame::Challenge(c) = abandoned.frame().await else { panic!("no challenge") };
    let (mut newer, newer_task) = s.online().await;
    // The abandoned socket's login completes only now.
    s.answer(&abandoned, &c.nonce);
    let (code, reason) = abandoned.close(Duration::from_secs(5)).await;
    assert_eq!((code, reason.as_str()), (close::REPLACED, close::REASON_REPLACED));
    ended(abandoned_task, Duration::from_secs(5)).await;
    assert!(!newer_task.is_finished(), "the newer connection was closed");
    assert!(s.state.hub.is_connected(s.key));
    s.fill_mailbox(1, 10).await;
    let pushed = tokio::time::timeout(Duration::from_secs(5), newer.frame()).await;
    assert!(matches!(pushed, Ok(server_frame::Frame::Envelope(_))), "the newer connection gets pushes: {pushed:?}");
}

/// Sends `f` and waits for its answer.
async fn answer_to(peer: &mut Peer, f: client_frame::Frame) -> send_response::Result {
    peer.send(f);
    loop {
        if let server_frame::Frame::SendResponse(r) = peer.frame().await {
            return r.result.unwrap_or_else(|| panic!("an answer without a result"));
        }
    }
}

/// A resend after a reconnect whose idempotency key is already stored is answered with the
/// first result even when the send rate is used up: it stores nothing, so it costs no token
/// (one-to-one sends, group messages and distributions alike). A new key is still limited.
#[tokio::test]
async fn a_resend_with_a_stored_idempotency_key_is_answered_though_the_rate_is_used_up() {
    use hush_wire::frames::{DeviceMessage, DistributeRequest, GroupSendRequest, RecipientMessages, SendErrorCode};

    use crate::store::NewGroup;
    let s = scene(|c| {
        c.limits.rate_burst = 3;
        c.limits.rate_per_second = 0.001;
        c.ping_interval = Duration::from_secs(3600);
    })
    .await;
    let now = now_ms();
    let group = NewGroup {
        id: Uuid::new_v4(),
        owner: s.sender.account,
        members: vec![s.key.account],
        title: Vec::new(),
        description: Vec::new(),
        avatar: Vec::new(),
        members_can_add: false,
        server_ts: now,
        expires_at: now + 3_600_000,
        max_members: 10,
        read_above: 100,
    };
    let g = s.state.store.create_group(&group).await.unwrap_or_else(|e| panic!("{e}")).group;
    let (mut peer, _task) = s.online().await;
    let to_sender = || {
        vec![RecipientMessages {
            account_id: s.sender.account.as_bytes().to_vec().into(),
            messages: vec![DeviceMessage {
                device_id: 1,
                registration_id: 7,
                kind: hush_wire::frames::EnvelopeKind::SealedSender as i32,
                content: bytes::Bytes::from("ciphertext"),
            }],
        }]
    };
    let send = |request_id, key: &'static [u8]| {
        client_frame::Frame::Send(hush_wire::frames::SendRequest {
            request_id,
            recipients: to_sender(),
            online_only: false,
            idempotency_key: bytes::Bytes::from_static(key),
            urgent: true,
        })
    };
    let distribute = |request_id| {
        client_frame::Frame::Distribute(DistributeRequest {
            request_id,
            group_id: g.as_bytes().to_vec().into(),
            epoch: 1,
            recipients: to_sender(),
            idempotency_key: bytes::Bytes::from_static(b"distribution-1"),
        })
    };
    let group_send = |request_id| {
        client_frame::Frame::GroupSend(GroupSendRequest {
            request_id,
            group_id: g.as_bytes().to_vec().into(),
            epoch: 1,
            content: bytes::Bytes::from("skm"),
            idempotency_key: bytes::Bytes::from_static(b"group-1"),
            urgent: true,
        })
    };
    let ok = |r: send_response::Result| match r {
        send_response::Result::Ok(ok) => ok,
        send_response::Result::Error(e) => panic!("refused: {e:?}"),
    };
    // The burst: three sends, one of each kind.
    let first_distribution = ok(answer_to(&mut peer, distribute(1)).await);
    let first_group = ok(answer_to(&mut peer, group_send(2)).await);
    let first_send = ok(answer_to(&mut peer, send(3, b"message-1")).await);
    // The connection "died" before these answers: the client resends each with its key.
    assert_eq!(ok(answer_to(&mut peer, distribute(4)).await), first_distribution);
    assert_eq!(ok(answer_to(&mut peer, group_send(5)).await), first_group);
    assert_eq!(ok(answer_to(&mut peer, send(6, b"message-1")).await), first_send);
    // A new message is limited.
    let send_response::Result::Error(e) = answer_to(&mut peer, send(7, b"message-2")).await else {
        panic!("a new send past the burst was accepted")
    };
    assert_eq!(e.code(), SendErrorCode::RateLimited);
    assert!(e.retry_after_ms > 0);
}
