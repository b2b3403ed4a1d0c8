//! A lean protocol client for load: registration, authenticated WebSockets,
//! frame helpers. Envelope contents are random bytes with a small header the
//! bench reads back (who sent it, its number, when it was sent).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hush_keys::auth::DeviceSigningKey;
use hush_keys::registration::{RegistrationSigningInput, sign_registration};
use hush_wire::api::{
    B64, NewDevice, RegisterRequest, RegisterResponse, RegistrationChallenge, RegistrationProof, SignedPreKey,
};
use hush_wire::close;
use hush_wire::frames::{
    Ack, Auth, ClientFrame, DeviceMessage, DistributeRequest, EnvelopeKind, GroupAck, GroupSendRequest,
    RecipientMessages, SendRequest, client_frame, decode_server_frame, server_frame,
};
use libsignal_protocol::{GenericSignedPreKey, IdentityKeyPair, KeyPair, KyberPreKeyRecord, kem};
use rand::{Rng, RngCore};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::target::Target;

/// An authenticated WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Public key material shared by every bench account (the server checks
/// signatures, not uniqueness, so one identity serves thousands of accounts).
pub struct SharedKeys {
    pair: IdentityKeyPair,
    identity: Vec<u8>,
    signed_prekey: SignedPreKey,
    kyber: SignedPreKey,
}

impl SharedKeys {
    /// Generates one identity with a signed EC prekey and a Kyber last-resort key.
    pub fn generate() -> anyhow::Result<Self> {
        let mut rng = rand::rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let spk = KeyPair::generate(&mut rng);
        let spk_pub = spk.public_key.serialize();
        let sig = identity.private_key().calculate_signature(&spk_pub, &mut rng)?;
        let kyber = KyberPreKeyRecord::generate(kem::KeyType::Kyber1024, 1.into(), identity.private_key())?;
        Ok(SharedKeys {
            pair: identity,
            identity: identity.identity_key().serialize().to_vec(),
            signed_prekey: SignedPreKey { id: 1, public_key: B64(spk_pub.to_vec()), signature: B64(sig.to_vec()) },
            kyber: SignedPreKey {
                id: 1,
                public_key: B64(kyber.public_key()?.serialize().to_vec()),
                signature: B64(kyber.signature()?),
            },
        })
    }
}

/// A registered device the bench can connect as.
pub struct BenchDevice {
    /// Its account.
    pub account: Uuid,
    /// Its registration id.
    pub registration_id: u32,
    signing: DeviceSigningKey,
}

impl BenchDevice {
    /// The `Authorization` header of one REST request by this device (`Hush-Sig`, fresh nonce).
    pub fn rest_authorization(&self, method: &str, path_and_query: &str, body: &[u8]) -> String {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let nonce: [u8; 16] = rand::rng().random();
        self.signing.rest_authorization(self.account, 1, method, path_and_query, body, now_ms, nonce)
    }

    /// This device (device 1 of its account) as the recipient of one ciphertext.
    fn message(&self, kind: EnvelopeKind, content: Bytes) -> RecipientMessages {
        RecipientMessages {
            account_id: self.account.as_bytes().to_vec().into(),
            messages: vec![DeviceMessage {
                device_id: 1,
                registration_id: self.registration_id,
                kind: kind as i32,
                content,
            }],
        }
    }
}

static NEXT_USER: AtomicU32 = AtomicU32::new(0);

/// Registers `n` accounts (one device each), `concurrency` at a time, spread over the target's nodes.
pub async fn register(
    target: &Target,
    keys: &SharedKeys,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<BenchDevice>> {
    let http = reqwest::Client::new();
    let run: u32 = rand::rng().random();
    let tasks = futures_util::stream::iter(0..n).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/accounts", target.http_url(i));
        async move {
            let signing = DeviceSigningKey::generate(&mut rand::rng());
            let registration_id = rand::rng().random_range(1..=0x3FFF);
            let user = NEXT_USER.fetch_add(1, Ordering::Relaxed);
            let username = format!("b{run:08x}_{user}");
            let challenge: RegistrationChallenge =
                http.post(format!("{url}/challenge")).send().await?.error_for_status()?.json().await?;
            let auth_key = signing.public().to_bytes();
            let input = RegistrationSigningInput {
                username: &username,
                server_time_ms: challenge.server_time,
                nonce: &challenge.nonce.0,
                auth_key: &auth_key,
                registration_id,
            };
            let signature = sign_registration(&keys.pair, &input, &mut rand::rng())?;
            let proof = RegistrationProof {
                nonce: challenge.nonce,
                server_time: challenge.server_time,
                signature: B64(signature),
            };
            let req = RegisterRequest {
                proof,
                username,
                identity_key: B64(keys.identity.clone()),
                device: NewDevice {
                    registration_id,
                    auth_key: B64(signing.public().to_bytes().to_vec()),
                    name: None,
                    signed_prekey: keys.signed_prekey.clone(),
                    kyber_last_resort: keys.kyber.clone(),
                    one_time_prekeys: vec![],
                    one_time_kyber_prekeys: vec![],
                },
            };
            let resp = http.post(&url).json(&req).send().await?;
            if !resp.status().is_success() {
                bail!("registration failed: {} {}", resp.status(), resp.text().await.unwrap_or_default());
            }
            let body: RegisterResponse = resp.json().await?;
            Ok(BenchDevice { account: body.account_id, registration_id, signing })
        }
    });
    let results: Vec<anyhow::Result<BenchDevice>> = tasks.buffer_unordered(concurrency).collect().await;
    results.into_iter().collect()
}

fn binary(frame: client_frame::Frame) -> Message {
    Message::Binary(ClientFrame::from(frame).to_bytes().into())
}

/// The server closed the socket (with this close frame, if any) while the bench waited for a frame.
#[derive(Debug)]
pub struct ServerClosed {
    /// The close code, if the server sent a close frame.
    pub code: Option<u16>,
    /// Its reason text.
    pub reason: String,
}

impl std::fmt::Display for ServerClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "server closed the connection: {code} {}", self.reason),
            None => write!(f, "server closed the connection without a close frame"),
        }
    }
}

impl std::error::Error for ServerClosed {}

/// Connects and authenticates as `device` on `url`, once.
pub async fn connect(url: &str, device: &BenchDevice) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.context("WebSocket connect")?;
    let nonce = match next_frame(&mut ws).await? {
        server_frame::Frame::Challenge(c) => c.nonce,
        other => return Err(Unexpected(format!("expected a challenge, got {other:?}")).into()),
    };
    let signature = device.signing.sign_ws_challenge(&nonce, device.account, 1);
    let auth = Auth {
        account_id: device.account.as_bytes().to_vec().into(),
        device_id: 1,
        signature: signature.to_vec().into(),
    };
    ws.send(binary(client_frame::Frame::Auth(auth))).await?;
    match next_frame(&mut ws).await? {
        server_frame::Frame::AuthOk(_) => Ok(ws),
        other => Err(Unexpected(format!("expected AuthOk, got {other:?}")).into()),
    }
}

/// The server answered the handshake with a frame the protocol does not allow there.
#[derive(Debug)]
pub struct Unexpected(String);

impl std::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unexpected {}

/// Whether a failed connection attempt is worth repeating: the server was busy (`1013`: its
/// handshake budget was full; a `503` or `429` upgrade), restarting or unreachable (`1001`,
/// `1011`, a refused or reset TCP connection). A refused authentication, a removed device or
/// a protocol error would fail again.
pub fn retryable(e: &anyhow::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    if let Some(closed) = e.downcast_ref::<ServerClosed>() {
        return !matches!(
            closed.code,
            Some(
                close::AUTH_FAILED
                    | close::MALFORMED
                    | close::DEVICE_REMOVED
                    | close::TOO_BIG
                    | close::UNSUPPORTED_DATA
            )
        );
    }
    if e.downcast_ref::<Unexpected>().is_some() {
        return false;
    }
    if let Some(WsError::Http(response)) = e.downcast_ref::<WsError>() {
        let status = response.status();
        return status.is_server_error() || status.as_u16() == 429;
    }
    true
}

/// Delay before retry number `attempt` (0 = the first retry): doubling from [`FIRST_BACKOFF`]
/// up to [`MAX_BACKOFF`], of which a random half is waited ("equal jitter"), so devices refused
/// together do not come back together.
pub fn backoff(attempt: u32, rng: &mut impl Rng) -> Duration {
    let full = FIRST_BACKOFF.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
    let half = full / 2;
    half + half.mul_f64(rng.random::<f64>())
}

/// First retry delay of [`backoff`] (before jitter).
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest retry delay of [`backoff`] (before jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Handshakes (TCP connect to `AuthOk`) one bounded [`Connector`] has in flight at once: well
/// under hushd's default handshake budget (`--max-handshakes 1024`).
pub const CONNECT_CONCURRENCY: usize = 256;

/// Opens authenticated connections as a well-behaved client does: a bounded number of
/// handshakes at once (a fleet of bench devices shares one connector), and a busy, restarting
/// or unreachable server retried with jittered backoff until a deadline.
#[derive(Clone)]
pub struct Connector {
    slots: Option<Arc<Semaphore>>,
}

impl Connector {
    /// At most `concurrency` handshakes at once.
    pub fn bounded(concurrency: usize) -> Self {
        Connector { slots: Some(Arc::new(Semaphore::new(concurrency.max(1)))) }
    }

    /// No bound on concurrent handshakes: independent devices that happen to reconnect at once
    /// (what the reconnect storm measures). They still back off when refused.
    pub fn unbounded() -> Self {
        Connector { slots: None }
    }

    /// Connects as `device`, retrying what [`retryable`] allows until `deadline`. Returns the
    /// connection and the attempts that failed before it.
    pub async fn connect(
        &self,
        url: &str,
        device: &BenchDevice,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<(Ws, u32)> {
        let mut failures = 0;
        loop {
            let attempt = async {
                let _slot = match &self.slots {
                    Some(slots) => Some(slots.acquire().await.context("connector closed")?),
                    None => None,
                };
                connect(url, device).await
            };
            let e = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(ws)) => return Ok((ws, failures)),
                Ok(Err(e)) => e,
                Err(_) => bail!("no connection before the deadline ({failures} failed attempts)"),
            };
            if !retryable(&e) {
                return Err(e.context("not retried"));
            }
            let delay = backoff(failures, &mut rand::rng());
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(e.context(format!("still failing at the deadline after {} attempts", failures + 1)));
            }
            failures += 1;
            tokio::time::sleep(delay).await;
        }
    }
}

/// The next server frame (pings are answered by tungstenite on the next read/write).
pub async fn next_frame(ws: &mut Ws) -> anyhow::Result<server_frame::Frame> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(decode_server_frame(&b)?),
            Some(Ok(Message::Close(c))) => {
                let (code, reason) = c.map(|c| (Some(u16::from(c.code)), c.reason.to_string())).unwrap_or_default();
                return Err(ServerClosed { code, reason }.into());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ServerClosed { code: None, reason: String::new() }.into()),
        }
    }
}

/// Decodes a message into a server frame, if it is one.
pub fn decode(msg: &Message) -> Option<server_frame::Frame> {
    match msg {
        Message::Binary(b) => decode_server_frame(b).ok(),
        _ => None,
    }
}

/// An ack frame.
pub fn ack(seqs: Vec<u64>) -> Message {
    acks(seqs, Vec::new())
}

/// An ack frame for mailbox envelopes (`seqs`) and group-stream envelopes (`groups`).
pub fn acks(seqs: Vec<u64>, groups: Vec<GroupAck>) -> Message {
    binary(client_frame::Frame::Ack(Ack { seqs, groups }))
}

/// A sender-key distribution for `group` at `epoch` to each of `devices`: random bytes stand in
/// for the sealed ciphertexts (the server cannot tell them apart).
pub fn distribute(request_id: u64, group: Uuid, epoch: u64, devices: &[impl AsRef<BenchDevice>]) -> Message {
    let mut rng = rand::rng();
    let recipients = devices
        .iter()
        .map(|d| {
            let mut content = vec![0u8; 32];
            rng.fill_bytes(&mut content);
            d.as_ref().message(EnvelopeKind::SealedSender, content.into())
        })
        .collect();
    let req = DistributeRequest {
        request_id,
        group_id: group.as_bytes().to_vec().into(),
        epoch,
        recipients,
        idempotency_key: Bytes::new(),
    };
    binary(client_frame::Frame::Distribute(req))
}

/// Builds envelope contents of a fixed size carrying (sender, number, send time).
pub struct Payloads {
    filler: Bytes,
    epoch: Instant,
}

/// Bit of the header's sender field that marks a resent message.
const RESENT: u32 = 1 << 31;

/// What a payload header says.
pub struct Header {
    /// Whether the sender sent it again because the answer to the first send was lost.
    pub resent: bool,
    /// Message number from that sender.
    pub number: u32,
    /// Nanoseconds since the bench epoch when it was sent.
    pub sent_ns: u64,
}

const HEADER: usize = 16;

impl Payloads {
    /// Payloads of `size` bytes (at least the 16-byte header).
    pub fn new(size: usize, epoch: Instant) -> Self {
        let mut filler = vec![0u8; size.max(HEADER)];
        rand::rng().fill_bytes(&mut filler);
        Payloads { filler: filler.into(), epoch }
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// A send request for one message to one device.
    pub fn send(&self, request_id: u64, to: &BenchDevice, sender: u32, number: u32) -> Message {
        self.request(request_id, to, (sender, number), false, Bytes::new())
    }

    /// Like [`Payloads::send`], with an idempotency key that is the same for every attempt of
    /// one message (its sender and number), as a client's outbox message id is, and marked as
    /// sent again after a lost answer (`resent`), so the receiver can tell a duplicate of a
    /// resend from any other duplicate.
    pub fn send_marked(&self, request_id: u64, to: &BenchDevice, sender: u32, number: u32, resent: bool) -> Message {
        let key = Bytes::from(format!("bench-{}-{number}", sender & !RESENT));
        self.request(request_id, to, (sender, number), resent, key)
    }

    /// A group message (number `number` of sender 0) to `group` under `epoch`, stamped now.
    pub fn group_send(&self, request_id: u64, group: Uuid, epoch: u64, number: u32) -> Message {
        let req = GroupSendRequest {
            request_id,
            group_id: group.as_bytes().to_vec().into(),
            epoch,
            content: self.content(0, number, false),
            idempotency_key: Bytes::new(),
            urgent: true,
        };
        binary(client_frame::Frame::GroupSend(req))
    }

    fn request(&self, request_id: u64, to: &BenchDevice, message: (u32, u32), resent: bool, key: Bytes) -> Message {
        let (sender, number) = message;
        let req = SendRequest {
            request_id,
            recipients: vec![to.message(EnvelopeKind::SealedSender, self.content(sender, number, resent))],
            online_only: false,
            idempotency_key: key,
            urgent: true,
        };
        binary(client_frame::Frame::Send(req))
    }

    /// The filler with its header: sender (and the resent bit), number, and the time now.
    fn content(&self, sender: u32, number: u32, resent: bool) -> Bytes {
        let mut content = BytesMut::from(&self.filler[..]);
        let sender = if resent { sender | RESENT } else { sender & !RESENT };
        content[..4].copy_from_slice(&sender.to_be_bytes());
        content[4..8].copy_from_slice(&number.to_be_bytes());
        content[8..16].copy_from_slice(&self.now_ns().to_be_bytes());
        content.freeze()
    }

    /// Reads a payload header.
    pub fn header(content: &[u8]) -> Option<Header> {
        if content.len() < HEADER {
            return None;
        }
        Some(Header {
            resent: u32::from_be_bytes(content[..4].try_into().ok()?) & RESENT != 0,
            number: u32::from_be_bytes(content[4..8].try_into().ok()?),
            sent_ns: u64::from_be_bytes(content[8..16].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn closed(code: u16) -> anyhow::Error {
        ServerClosed { code: Some(code), reason: String::new() }.into()
    }

    #[test]
    fn a_busy_or_restarting_server_is_retried_and_a_refusal_is_not() {
        for code in [close::TRY_AGAIN_LATER, close::GOING_AWAY, close::INTERNAL] {
            assert!(retryable(&closed(code)), "{code} is retried");
        }
        assert!(retryable(&ServerClosed { code: None, reason: String::new() }.into()), "a reset is retried");
        assert!(retryable(&anyhow::anyhow!("connection refused").context("WebSocket connect")));
        for code in [close::AUTH_FAILED, close::DEVICE_REMOVED, close::MALFORMED] {
            assert!(!retryable(&closed(code)), "{code} is not retried");
        }
        assert!(!retryable(&Unexpected("expected AuthOk".into()).into()));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_waits_a_random_half_of_it() {
        let ms = Duration::from_millis;
        let mut rng = StdRng::seed_from_u64(7);
        let expected = [(0, ms(25), ms(50)), (1, ms(50), ms(100)), (4, ms(400), ms(800)), (5, ms(500), ms(1000))];
        for (attempt, low, high) in expected.into_iter().chain([(40, ms(500), ms(1000))]) {
            for _ in 0..50 {
                let d = backoff(attempt, &mut rng);
                assert!(d >= low && d <= high, "attempt {attempt}: {d:?} outside [{low:?}, {high:?}]");
            }
        }
        let first: Vec<Duration> = (0..20).map(|_| backoff(0, &mut rng)).collect();
        assert!(first.iter().any(|d| *d != first[0]), "devices refused together do not come back together");
    }
}
