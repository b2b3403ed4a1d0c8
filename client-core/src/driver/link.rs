//! Linking this machine to an existing account (the new device's side): a provisioning
//! socket on the server gives an address; the link code (address + this device's x25519
//! key) is shown to the person, who approves it on the account's primary device; the sealed
//! provisioning message comes back through the socket and this device registers itself.

use futures_util::StreamExt as _;
use hush_keys::provision::{ArchiveRef, LinkCode, ProvisionMessage, ProvisioningKeyPair};
use hush_wire::frames::provisioning_frame;
use rand::SeedableRng as _;
use tokio_tungstenite::tungstenite::Message;

use super::rest::{DeviceAuth, Rest, now_ms};
use super::ws::CONNECT_TIMEOUT;
use crate::account::{LinkParams, LinkedDevice};
use crate::error::ClientError;
use crate::machine::archive::{ArchiveReader, import_batch};
use crate::store::ClientStore;
use crate::types::{ClientConfig, HistoryImport};

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

/// Registers this device under the account `provision` names (`POST /v1/devices/link`),
/// stores it in `config.data_dir`'s store, then imports the history archive the primary sent
/// (if any). A failed import does not fail the link: it is reported in the result.
pub(crate) async fn register(
    config: ClientConfig,
    provision: ProvisionMessage,
    name: Option<String>,
) -> Result<HistoryImport, ClientError> {
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
        let account = batch.account.clone();
        store.commit(batch).await?;
        let (Some(archive), Some(account)) = (provision.archive, account) else {
            return Ok(HistoryImport::None);
        };
        let auth_seed: [u8; 32] = account
            .auth_key
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Invalid("the new device's auth key is not 32 bytes".into()))?;
        let auth = DeviceAuth {
            account: account.account_id,
            device_id: account.device_id,
            key: hush_keys::auth::DeviceSigningKey::from_bytes(&auth_seed),
        };
        let rest = Rest::new(&config.server_url, Some(auth))?;
        Ok::<_, ClientError>(import_history(&rest, &store, archive, account.account_id, &mut rng).await)
    }
    .await;
    store.close().await;
    result
}

/// Downloads, opens and imports the history archive, then deletes it from the server
/// (whatever became of the import). Never fails: a failure is the result's reason.
async fn import_history(
    rest: &Rest,
    store: &dyn ClientStore,
    archive: ArchiveRef,
    account: uuid::Uuid,
    rng: &mut impl rand::Rng,
) -> HistoryImport {
    let outcome = async {
        if archive.id.is_empty() || !archive.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err("the archive id is malformed".to_owned());
        }
        let failed = |f: crate::machine::RestFailure| match (f.status, f.code.as_str()) {
            (Some(404), "unknown_archive") => "the archive is gone from the server (expired or deleted)".to_owned(),
            _ => ClientError::from(f).to_string(),
        };
        let first = rest.archive_chunk(&archive.id, 0).await.map_err(failed)?;
        let mut reader = ArchiveReader::new(archive.key.clone(), &first).map_err(|e| e.to_string())?;
        while let Some(index) = reader.next_index() {
            let chunk = rest.archive_chunk(&archive.id, index).await.map_err(failed)?;
            reader.push(&chunk).map_err(|e| e.to_string())?;
        }
        let history = reader.finish().map_err(|e| e.to_string())?;
        let batch = import_batch(&history, account, rng).map_err(|e| e.to_string())?;
        let counts = (batch.messages.len(), batch.contacts.len(), batch.groups.len());
        store.commit(batch).await.map_err(|e| e.to_string())?;
        Ok(counts)
    }
    .await;
    if let Err(f) = rest.delete_archive(&archive.id).await
        && f.code != "unknown_archive"
    {
        tracing::warn!(code = %f.code, "could not delete the history archive from the server; it expires there");
    }
    match outcome {
        Ok((messages, contacts, groups)) => {
            tracing::info!(messages, contacts, groups, "history imported");
            HistoryImport::Imported { messages, contacts, groups }
        }
        Err(reason) => {
            tracing::warn!(%reason, "the history archive was not imported; linked without history");
            HistoryImport::Failed(reason)
        }
    }
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
