//! One trust root per deployment. Clients pin the trust root that sealed-sender
//! certificates chain to; two nodes with different `server-keys.bin` on one database would
//! silently break sealed sender for clients pinned to the other node's. So the first node
//! records its trust root in the database, and a node whose key file differs refuses to start.

use std::path::PathBuf;

use hush_keys::certs::ServerKeys;

use crate::store::{Store, StoreError, TrustRootCheck};

/// Why a node may not start with its key file.
#[derive(Debug, thiserror::Error)]
pub enum TrustRootError {
    /// The database was first used with another trust root.
    #[error(
        "{path} holds trust root {ours}, but this database belongs to trust root {recorded} (recorded by the \
         first node that started on it). Every node must have the same server key file: copy {file} from a \
         node that runs on this database into this node's data directory (do not generate a new one: clients \
         have pinned the recorded trust root), then start again"
    )]
    Mismatch {
        /// This node's key file.
        path: PathBuf,
        /// The key file's name.
        file: &'static str,
        /// Fingerprint of this node's trust root.
        ours: String,
        /// Fingerprint of the recorded one.
        recorded: String,
    },
    /// The database could not be read or written.
    #[error("cannot check the trust root in the database: {0}")]
    Store(#[from] StoreError),
}

/// A short, printable fingerprint of a trust-root public key (its first 8 bytes in hex).
fn fingerprint(key: &[u8]) -> String {
    hex::encode(&key[..key.len().min(8)])
}

/// Records this node's trust root if the database has none, and refuses one that differs.
pub async fn check_trust_root(
    store: &dyn Store,
    keys: &ServerKeys,
    path: PathBuf,
    file: &'static str,
) -> Result<(), TrustRootError> {
    let ours = keys.trust_root_public();
    match store.record_trust_root(&ours).await? {
        TrustRootCheck::Recorded => {
            tracing::info!(trust_root = %fingerprint(&ours), "recorded this deployment's trust root");
            Ok(())
        }
        TrustRootCheck::Matches => Ok(()),
        TrustRootCheck::Differs { recorded } => {
            Err(TrustRootError::Mismatch { path, file, ours: fingerprint(&ours), recorded: fingerprint(&recorded) })
        }
    }
}
