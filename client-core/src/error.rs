//! Errors, one enum per layer: [`StoreError`] (local store), [`MachineError`] (protocol state
//! machine), [`ClientError`] (the public API).

use libsignal_protocol::SignalProtocolError;

/// A local store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error (disk full, file locked, corrupt file...).
    #[error("local store error: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A stored record does not decode; the data directory may be damaged.
    #[error("local store holds an unreadable record ({0}); the data directory may be damaged")]
    Corrupt(String),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// The protocol state machine failed to process an input.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// libsignal refused an operation.
    #[error("signal protocol error: {0}")]
    Signal(#[from] SignalProtocolError),
    /// Key material (a certificate, a bundle) did not check out.
    #[error("key check failed: {0}")]
    Keys(#[from] hush_keys::KeyError),
    /// A decrypted content did not decode.
    #[error("malformed content: {0}")]
    Content(String),
    /// The contact's identity key changed and is not trusted again yet.
    #[error("the identity key of {0} changed; compare safety numbers, then trust the new key to send again")]
    IdentityUntrusted(String),
}

/// What the public API reports.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The protocol layer failed.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// The data directory holds no account: register first.
    #[error("no account in this data directory; register one first")]
    NotRegistered,
    /// The data directory already holds an account.
    #[error("this data directory already holds the account {0}; use another directory for a new account")]
    AlreadyRegistered(String),
    /// The server is unreachable or answered something unexpected.
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The server refused a request.
    #[error("the server refused the request ({status} {code}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Machine-readable code, e.g. `username_taken`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// No account has this username.
    #[error("no account is named {0}")]
    UnknownUser(String),
    /// Sending to this contact is blocked because their identity key changed.
    #[error("the identity key of {0} changed; compare safety numbers, then trust the new key to send again")]
    IdentityUntrusted(String),
    /// No message has this id, or it cannot be retried.
    #[error("no failed message {0} to retry")]
    NoSuchMessage(String),
    /// A wait ran past its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The client has been shut down.
    #[error("the client has shut down")]
    Shutdown,
    /// An argument is not acceptable (empty text, bad URL...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The local data directory could not be used.
    #[error("data directory error: {0}")]
    Io(#[from] std::io::Error),
}
