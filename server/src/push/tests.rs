//! The wake-up engine against SQLite with a recording provider, and the exact payloads.

use std::collections::VecDeque;
use std::sync::Mutex;

use hush_keys::auth::DeviceSigningKey;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use super::*;
use crate::hub::QueueLimit;
use crate::state::now_ms;
use crate::store::sqlite::SqliteStore;
use crate::store::{NewAccount, NewDeviceRecord, SignedKey};

const DEADLINE: Duration = Duration::from_secs(10);

/// Records every wake-up; answers with scripted results first, then `Ok`.
struct Recorder {
    sent: mpsc::UnboundedSender<(PushTarget, WakeUp)>,
    script: Mutex<VecDeque<Result<(), PushError>>>,
}

#[async_trait]
impl Provider for Recorder {
    fn name(&self) -> &'static str {
        "unifiedpush"
    }

    async fn send(&self, target: &PushTarget, wake: WakeUp) -> Result<(), PushError> {
        let next = self.script.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let _ = self.sent.send((target.clone(), wake));
        next.unwrap_or(Ok(()))
    }
}

struct Scene {
    pusher: Pusher,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    sent: UnboundedReceiver<(PushTarget, WakeUp)>,
    _dir: tempfile::TempDir,
}

fn timing() -> Timing {
    Timing {
        window: Duration::from_secs(60),
        background_delay: Duration::from_millis(50),
        disconnect_delay: Duration::from_millis(50),
    }
}

async fn scene(script: Vec<Result<(), PushError>>) -> Scene {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}", dir.path().join("hush.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap_or_else(|e| panic!("{e}")));
    let hub = Arc::new(Hub::new(QueueLimit { pushes: 16, bytes: 1 << 20 }));
    let (tx, sent) = mpsc::unbounded_channel();
    let recorder = Recorder { sent: tx, script: Mutex::new(script.into()) };
    let providers = Providers { unifiedpush: Some(Arc::new(recorder)), ..Providers::default() };
    let engine = Engine { store: store.clone(), hub: hub.clone(), cluster: None, providers, timing: timing() };
    let pusher = Pusher::spawn(engine, CancellationToken::new());
    Scene { pusher, store, hub, sent, _dir: dir }
}

fn endpoint(n: u32) -> PushTarget {
    PushTarget::UnifiedPush { endpoint: format!("https://push.example.org/up/{n}") }
}

impl Scene {
    /// A device with push target `endpoint(n)`.
    async fn device(&self, n: u32) -> (DeviceKey, MailboxId) {
        let signing = DeviceSigningKey::generate(&mut rand::rng());
        let key = |id| SignedKey { id, public_key: vec![5; 33], signature: vec![0; 64] };
        let record = NewDeviceRecord {
            registration_id: 7,
            auth_key: signing.public().to_bytes(),
            name: None,
            signed_prekey: key(1),
            kyber_last_resort: key(2),
            one_time_prekeys: vec![],
            one_time_kyber_prekeys: vec![],
            created_at: now_ms(),
        };
        let id = Uuid::new_v4();
        let account = NewAccount { id, username: format!("u{n}"), identity_key: vec![5; 33], device: record };
        self.store.create_account(&account).await.unwrap_or_else(|e| panic!("{e}"));
        let device = DeviceKey { account: id, device_id: 1 };
        self.store.set_push_target(device, &endpoint(n), now_ms()).await.unwrap_or_else(|e| panic!("{e}"));
        let mailbox = self.store.device(device).await.ok().flatten().map(|d| d.mailbox);
        (device, mailbox.unwrap_or_else(|| panic!("no device")))
    }

    async fn next(&mut self) -> (PushTarget, WakeUp) {
        tokio::time::timeout(DEADLINE, self.sent.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no wake-up within {DEADLINE:?}"))
    }

    /// Wakes a fresh sentinel device and returns once its wake-up arrived, asserting that
    /// nothing else was sent before it.
    async fn nothing_else_before_sentinel(&mut self, n: u32) {
        let (sentinel, _) = self.device(n).await;
        self.pusher.committed(vec![sentinel], Urgency::Urgent);
        let (target, _) = self.next().await;
        assert_eq!(target, endpoint(n), "a wake-up other than the sentinel's was sent");
    }
}

#[tokio::test]
async fn a_burst_of_urgent_commits_wakes_an_offline_device_once() {
    let mut s = scene(vec![]).await;
    let (bob, _) = s.device(1).await;
    for _ in 0..50 {
        s.pusher.committed(vec![bob], Urgency::Urgent);
        tokio::task::yield_now().await;
    }
    assert_eq!(s.next().await, (endpoint(1), WakeUp { urgency: Urgency::Urgent }));
    s.nothing_else_before_sentinel(2).await;
}

#[tokio::test]
async fn a_connected_device_is_never_woken() {
    let mut s = scene(vec![]).await;
    let (bob, mailbox) = s.device(1).await;
    let _registration = s.hub.register(bob, 1);
    s.pusher.committed(vec![bob], Urgency::Urgent);
    s.pusher.committed(vec![bob], Urgency::Background);
    s.pusher.disconnected(bob, mailbox);
    s.nothing_else_before_sentinel(2).await;
}

#[tokio::test]
async fn non_urgent_envelopes_wait_for_one_background_wake_up() {
    let mut s = scene(vec![]).await;
    let (bob, _) = s.device(1).await;
    let started = Instant::now();
    for _ in 0..5 {
        s.pusher.committed(vec![bob], Urgency::Background);
    }
    assert_eq!(s.next().await, (endpoint(1), WakeUp { urgency: Urgency::Background }));
    assert!(started.elapsed() >= timing().background_delay, "it waited for the background delay");
    s.nothing_else_before_sentinel(2).await;
}

#[tokio::test]
async fn a_disconnect_wakes_only_a_device_that_left_envelopes_unacked() {
    let mut s = scene(vec![]).await;
    let (empty, empty_mailbox) = s.device(1).await;
    s.pusher.disconnected(empty, empty_mailbox);
    s.nothing_else_before_sentinel(2).await;
    // A device with an envelope waiting in its mailbox is woken after the delay.
    let (bob, mailbox) = s.device(3).await;
    let item = crate::store::SendItem {
        sender: empty,
        recipients: vec![crate::store::RecipientBatch {
            account: bob.account,
            messages: vec![crate::store::OutgoingMessage {
                device_id: 1,
                registration_id: 7,
                kind: hush_wire::frames::EnvelopeKind::SealedSender as i32,
                content: bytes::Bytes::from_static(b"sealed"),
            }],
        }],
        server_ts: now_ms(),
        expires_at: now_ms() + 60_000,
        idempotency_key: None,
    };
    let outcome = s.store.commit(&[crate::store::Write::Direct(item)], 100).await;
    assert!(matches!(outcome.as_deref(), Ok([Ok(_)])), "{outcome:?}");
    s.pusher.disconnected(bob, mailbox);
    assert_eq!(s.next().await, (endpoint(3), WakeUp { urgency: Urgency::Background }));
}

#[tokio::test]
async fn an_invalid_token_answer_removes_the_target() {
    let mut s = scene(vec![Err(PushError::InvalidToken)]).await;
    let (bob, _) = s.device(1).await;
    s.pusher.committed(vec![bob], Urgency::Urgent);
    s.next().await;
    s.nothing_else_before_sentinel(2).await;
    assert_eq!(s.store.push_target(bob).await.ok().flatten(), None, "the invalid target is gone");
}

#[tokio::test]
async fn a_temporary_failure_is_retried_and_a_refusal_is_not() {
    let mut s = scene(vec![Err(PushError::Retry("503".into(), Some(Duration::from_millis(10))))]).await;
    let (bob, _) = s.device(1).await;
    s.pusher.committed(vec![bob], Urgency::Urgent);
    s.next().await;
    assert_eq!(s.next().await.0, endpoint(1), "retried after the failure");
    assert!(s.store.push_target(bob).await.ok().flatten().is_some(), "a temporary failure keeps the target");
}

#[test]
fn apns_payloads_carry_no_content_and_name_their_headers() {
    let token = "ab".repeat(32);
    for (name, urgency) in [("apns_urgent", Urgency::Urgent), ("apns_background", Urgency::Background)] {
        let request =
            apns::request(&token, "org.example.hush", true, WakeUp { urgency }).unwrap_or_else(|e| panic!("{e}"));
        let json: serde_json::Value = serde_json::from_str(&request.json).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(
            name,
            format!("{}\n{:?}", serde_json::to_string_pretty(&json).unwrap_or_default(), request.headers)
        );
    }
}

#[test]
fn fcm_messages_are_data_only_with_one_flag() {
    insta::assert_json_snapshot!("fcm_urgent", fcm::message("fcm-token", WakeUp { urgency: Urgency::Urgent }));
    insta::assert_json_snapshot!("fcm_background", fcm::message("fcm-token", WakeUp { urgency: Urgency::Background }));
}
