//! Linking a new device: the provisioning socket ([`ProvisioningClient`]), link tokens and the
//! new device's `POST /v1/devices/link`, signed as a client that received the identity key.

use futures_util::{SinkExt as _, StreamExt as _};
use hush_wire::api::{AddDeviceResponse, B64, LinkDeviceRequest, LinkToken, ProvisioningBody};
use hush_wire::frames::{ProvisioningAddress, provisioning_frame};
use hush_wire::link::link_proof_input;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::device::{TestAccount, TestDevice};
use crate::keys::{DEFAULT_ONE_TIME_KEYS, DeviceKeys};
use crate::rest::{ApiResponse, RestClient};
use crate::server::TestServer;
use crate::ws::Closed;

/// What a provisioning socket was sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisioningEvent {
    /// `ProvisioningFrame { message }`: the body an existing device PUT to the address.
    Message(Vec<u8>),
    /// The socket ended.
    Closed(Closed),
}

/// A new device waiting on `GET /v1/provisioning`.
pub struct ProvisioningClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The address the server sent first.
    pub address: ProvisioningAddress,
    closed: Option<Closed>,
}

impl std::fmt::Debug for ProvisioningClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningClient").field("address", &self.address.address).finish_non_exhaustive()
    }
}

/// The `ws://` URL of the provisioning socket of `server`.
pub fn provisioning_url(server: &TestServer) -> String {
    format!("ws://{}/v1/provisioning", server.addr())
}

impl ProvisioningClient {
    /// Opens a provisioning socket and reads its address; panics if the upgrade is refused.
    pub async fn open(server: &TestServer) -> ProvisioningClient {
        let url = provisioning_url(server);
        let mut stream = match tokio::time::timeout(crate::WAIT, tokio_tungstenite::connect_async(&url)).await {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(e)) => panic!("cannot open {url}: {e}"),
            Err(_) => panic!("timed out connecting to {url}"),
        };
        let first = match tokio::time::timeout(crate::WAIT, stream.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => hush_wire::frames::decode_provisioning_frame(&bytes)
                .unwrap_or_else(|e| panic!("undecodable first provisioning frame: {e}")),
            other => panic!("expected the ProvisioningAddress frame, got {other:?}"),
        };
        let provisioning_frame::Frame::Address(address) = first else {
            panic!("the first provisioning frame is not the address: {first:?}")
        };
        ProvisioningClient { stream, address, closed: None }
    }

    /// The HTTP status with which the upgrade of a provisioning socket is refused, or `None`
    /// if it is accepted (the socket is then dropped).
    pub async fn refused_status(server: &TestServer) -> Option<u16> {
        let url = provisioning_url(server);
        match tokio::time::timeout(crate::WAIT, tokio_tungstenite::connect_async(&url)).await {
            Ok(Ok(_)) => None,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Some(resp.status().as_u16()),
            Ok(Err(e)) => panic!("opening {url} failed without an HTTP answer: {e}"),
            Err(_) => panic!("timed out connecting to {url}"),
        }
    }

    /// The next thing the server sent (pings are skipped); panics after [`crate::WAIT`].
    pub async fn next_event(&mut self) -> ProvisioningEvent {
        if let Some(closed) = &self.closed {
            return ProvisioningEvent::Closed(closed.clone());
        }
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting on the provisioning socket {}", self.address.address));
            let closed = match next {
                Some(Ok(Message::Binary(bytes))) => {
                    let frame = hush_wire::frames::decode_provisioning_frame(&bytes)
                        .unwrap_or_else(|e| panic!("undecodable provisioning frame: {e}"));
                    match frame {
                        provisioning_frame::Frame::Message(m) => return ProvisioningEvent::Message(m.body.to_vec()),
                        other => panic!("a second address frame: {other:?}"),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = tokio::time::timeout_at(deadline, self.stream.flush()).await;
                    match frame {
                        Some(f) => Closed { code: Some(u16::from(f.code)), reason: f.reason.to_string() },
                        None => Closed { code: None, reason: "close frame without a code".to_owned() },
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => Closed { code: None, reason: format!("transport error: {e}") },
                None => Closed { code: None, reason: "stream ended".to_owned() },
            };
            self.closed = Some(closed.clone());
            return ProvisioningEvent::Closed(closed);
        }
    }

    /// Waits for the one message; panics if the socket closes first.
    pub async fn expect_message(&mut self) -> Vec<u8> {
        match self.next_event().await {
            ProvisioningEvent::Message(body) => body,
            ProvisioningEvent::Closed(c) => panic!("the provisioning socket closed without a message: {c:?}"),
        }
    }

    /// Waits for the close; panics on a message or a close without a code.
    pub async fn expect_close(&mut self) -> (u16, String) {
        match self.next_event().await {
            ProvisioningEvent::Closed(Closed { code: Some(code), reason }) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Sends a raw WebSocket message (a frame the server must refuse).
    pub async fn send_raw(&mut self, msg: Message) {
        self.stream.send(msg).await.unwrap_or_else(|e| panic!("cannot send on the provisioning socket: {e}"));
    }

    /// Closes from the client side and waits (bounded) for the server's close reply.
    pub async fn close(mut self) {
        if self.stream.send(Message::Close(None)).await.is_err() {
            return;
        }
        while !matches!(self.next_event().await, ProvisioningEvent::Closed(_)) {}
    }
}

impl RestClient {
    /// `POST /v1/devices/link-tokens` as `device`.
    pub async fn link_token(&self, device: &TestDevice) -> ApiResponse {
        self.signed::<()>(device, "POST", "/v1/devices/link-tokens", None).await
    }

    /// `PUT /v1/provisioning/{address}` as `device` with `body`.
    pub async fn provision(&self, device: &TestDevice, address: &str, body: &[u8]) -> ApiResponse {
        let req = ProvisioningBody { body: B64(body.to_vec()) };
        self.signed(device, "PUT", &format!("/v1/provisioning/{address}"), Some(&req)).await
    }

    /// `PUT /v1/link-archives/{id}/chunks/{index}` as `device` with raw `bytes`.
    pub async fn put_archive_chunk(&self, device: &TestDevice, id: &str, index: u32, bytes: Vec<u8>) -> ApiResponse {
        self.signed_octets(device, "PUT", &format!("/v1/link-archives/{id}/chunks/{index}"), bytes).await
    }

    /// `GET /v1/link-archives/{id}/chunks/{index}` as `device`.
    pub async fn get_archive_chunk(&self, device: &TestDevice, id: &str, index: u32) -> ApiResponse {
        self.signed_get(device, &format!("/v1/link-archives/{id}/chunks/{index}")).await
    }

    /// `POST /v1/link-archives/{id}/complete` as `device` with `chunks`.
    pub async fn complete_archive(&self, device: &TestDevice, id: &str, chunks: u32) -> ApiResponse {
        let body = hush_wire::api::CompleteArchive { chunks };
        self.signed(device, "POST", &format!("/v1/link-archives/{id}/complete"), Some(&body)).await
    }

    /// `POST /v1/devices/link` (not signed: the token authenticates).
    pub async fn link_device(&self, req: &LinkDeviceRequest) -> ApiResponse {
        self.post_json("/v1/devices/link", req).await
    }
}

/// The signature a new device holding the identity private key makes over the link proof input.
pub fn sign_link(account: &TestAccount, token: &[u8], keys: &DeviceKeys) -> Vec<u8> {
    let input =
        link_proof_input(account.account_id, token, &keys.new_device.auth_key.0, keys.new_device.registration_id);
    account
        .identity
        .private_key()
        .calculate_signature(&input, &mut rand::rng())
        .unwrap_or_else(|e| panic!("cannot sign a link proof: {e}"))
        .to_vec()
}

/// A correctly signed link request for new device `keys` with `token`.
pub fn link_request(account: &TestAccount, token: &[u8], keys: &DeviceKeys) -> LinkDeviceRequest {
    LinkDeviceRequest {
        account_id: account.account_id,
        token: B64(token.to_vec()),
        device: keys.new_device.clone(),
        proof: B64(sign_link(account, token, keys)),
    }
}

impl TestAccount {
    /// Links a new device the way a client does: a token from the primary device, then the new
    /// device's own `POST /v1/devices/link`. Returns a copy of the new device.
    pub async fn link_new_device(&mut self, server: &TestServer) -> TestDevice {
        let rest = RestClient::new(server);
        let token: LinkToken = rest.link_token(self.primary()).await.json(201);
        let keys = DeviceKeys::generate(&self.identity, DEFAULT_ONE_TIME_KEYS);
        let resp: AddDeviceResponse = rest.link_device(&link_request(self, &token.token.0, &keys)).await.json(201);
        self.adopt(resp.device_id, keys)
    }

    /// Records a device the server added with `keys` under `device_id`; returns a copy.
    pub fn adopt(&mut self, device_id: u32, keys: DeviceKeys) -> TestDevice {
        let device = TestDevice {
            account_id: self.account_id,
            device_id,
            registration_id: keys.new_device.registration_id,
            signing_key: keys.signing_key,
            uploaded: keys.new_device,
        };
        self.devices.push(device.clone());
        device
    }
}
