//! Linking this machine to an existing account (the new device's side): a provisioning
//! socket on the server gives an address; the link code (address + this device's x25519
//! key) is shown to the person, who approves it on the account's primary device; the sealed
//! provisioning message comes back through the socket and this device registers itself.

use futures_util::StreamExt as _;
use hush_keys::provision::{LinkCode, ProvisionMessage, ProvisioningKeyPair};
use hush_wire::frames::provisioning_frame;
use rand::SeedableRng as _;
use tokio_tungstenite::tungstenite::Message;

use super::rest::{Rest, now_ms};
use super::ws::CONNECT_TIMEOUT;
use crate::account::{LinkParams, LinkedDevice};
use crate::error::ClientError;
use crate::store::ClientStore as _;
use crate::types::ClientConfig;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The provisioning socket URL for a server base URL.
fn provisioning_url(base: &str) -> String {
    let ws = super::ws::ws_url(base);
    format!("{}/v1/provisioning", ws.trim_end_matches("/v1/websocket"))
}

/// An open provisioning channel: the code to show, and the socket the approval comes through.
pub(crate) struct Channel {
    pub code: LinkCode,
    /// When the server closes the channel (ms since the epoch).
    pub expires_at: u64,
    keys: ProvisioningKeyPair,
    socket: Socket,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("address", &self.code.address()).field("expires_at", &self.expires_at).finish()
    }
}

/// Opens a provisioning socket and makes this device's link code.
pub(crate) async fn open(server_url: &str) -> Result<Channel, ClientError> {
    let url = provisioning_url(server_url);
    let (mut socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| ClientError::Timeout("connecting to the server's provisioning socket".into()))?
        .map_err(|e| ClientError::Network(format!("cannot connect: {}", super::rest::with_causes(&e))))?;
    let address = tokio::time::timeout(CONNECT_TIMEOUT, next(&mut socket))
        .await
        .map_err(|_| ClientError::Timeout("waiting for a provisioning address".into()))??;
    let provisioning_frame::Frame::Address(address) = address else {
        return Err(ClientError::Invalid("the server sent a link message before an address".into()));
    };
    let keys = ProvisioningKeyPair::generate(&mut rand::rngs::StdRng::from_os_rng());
    let code = keys
        .link_code(&address.address)
        .map_err(|e| ClientError::Invalid(format!("the server's provisioning address is not usable: {e}")))?;
    Ok(Channel { code, expires_at: address.expires_at, keys, socket })
}

impl Channel {
    /// Waits for the approval (until the server closes the channel at its expiry) and opens it.
    pub async fn provision_message(mut self) -> Result<ProvisionMessage, ClientError> {
        let frame = next(&mut self.socket).await?;
        let _ = self.socket.close(None).await;
        let provisioning_frame::Frame::Message(message) = frame else {
            return Err(ClientError::Invalid("the server sent a second provisioning address".into()));
        };
        self.keys
            .open_provision(&message.body)
            .map_err(|e| ClientError::Invalid(format!("the link message does not open with this device's key: {e}")))
    }
}

/// The next provisioning frame; a close is an error saying why.
async fn next(socket: &mut Socket) -> Result<provisioning_frame::Frame, ClientError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                return hush_wire::frames::decode_provisioning_frame(&bytes)
                    .map_err(|e| ClientError::Invalid(format!("bad provisioning frame from the server: {e}")));
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame.map(|f| u16::from(f.code)) {
                    Some(hush_wire::close::LINK_EXPIRED) => ClientError::Timeout(
                        "the link code expired before it was approved: run the link again for a new code".into(),
                    ),
                    Some(code) => ClientError::Network(format!("the server closed the provisioning socket ({code})")),
                    None => ClientError::Network("the server closed the provisioning socket".into()),
                });
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(e)) => return Err(ClientError::Network(format!("provisioning socket: {e}"))),
            None => return Err(ClientError::Network("the provisioning socket ended".into())),
        }
    }
}

/// Registers this device under the account `provision` names (`POST /v1/devices/link`) and
/// stores it in `config.data_dir`'s store.
pub(crate) async fn register(
    config: ClientConfig,
    provision: ProvisionMessage,
    name: Option<String>,
) -> Result<(), ClientError> {
    let store = super::open_store(&config).await?;
    let result = async {
        if let Some(existing) = store.account().await? {
            return Err(ClientError::AlreadyRegistered(existing.username));
        }
        let rest = Rest::new(&config.server_url, None)?;
        let info = rest.server_info().await?;
        let params =
            LinkParams { server_url: config.server_url.clone(), trust_root: info.trust_root.0, name, now_ms: now_ms() };
        let mut rng = rand::rngs::StdRng::from_os_rng();
        let linked = LinkedDevice::generate(&provision, params, &mut rng)?;
        let response = rest.link_device(&linked.request).await?;
        tracing::info!(device_id = response.device_id, "this device joined its account");
        let (_, batch) = linked.finish(&response);
        store.commit(batch).await?;
        Ok::<(), ClientError>(())
    }
    .await;
    store.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provisioning_url_follows_the_server_scheme() {
        assert_eq!(provisioning_url("http://h:1/"), "ws://h:1/v1/provisioning");
        assert_eq!(provisioning_url("https://h"), "wss://h/v1/provisioning");
    }
}
