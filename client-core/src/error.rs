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
#[non_exhaustive]
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
    /// A message is too long for the server's limits with the current device set.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The server's answer to this message is awaited; it cannot be cancelled now.
    #[error("message {0} is being sent right now; wait for the server's answer")]
    InFlight(String),
    /// An input the machine does not accept (an empty message, a message to oneself).
    #[error("{0}")]
    Invalid(String),
    /// The server refused a REST call (a group operation), or could not be reached.
    #[error("{0}")]
    Rest(crate::machine::RestFailure),
    /// No group with this id on this device.
    #[error("no group {0} on this device (see `hush group list`)")]
    UnknownGroup(String),
}

/// A message longer than the server accepts: 96 KiB per device envelope
/// ([`hush_wire::limits::MAX_ENVELOPE_BYTES`]) and 256 KiB per send across all recipient and own
/// devices ([`hush_wire::limits::MAX_SEND_BYTES`]), so the longest text depends on the device count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the message is {size} bytes, but a message to {devices} device(s) can be at most {longest} bytes \
     (the server takes {envelope_kib} KiB per device envelope and {send_kib} KiB per send across all recipient \
     and own devices); shorten it or split it",
    envelope_kib = hush_wire::limits::MAX_ENVELOPE_BYTES / 1024,
    send_kib = hush_wire::limits::MAX_SEND_BYTES / 1024
)]
pub struct TooLarge {
    /// The text's length in bytes (UTF-8).
    pub size: usize,
    /// The longest text that fits, in bytes.
    pub longest: usize,
    /// Devices the message is encrypted for (the recipient's and this account's other ones).
    pub devices: usize,
}

fn pid_note(pid: &Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// What the public API reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// Another process uses this data directory.
    #[error(
        "the data directory {dir} is in use by another hush process{}; stop it, or use another data directory",
        pid_note(.pid)
    )]
    Locked {
        /// The data directory.
        dir: String,
        /// The holder's process id, if it wrote one.
        pid: Option<u32>,
    },
    /// The server ended the connection for good (device removed, account unknown, this
    /// device connected elsewhere); the text says what to do.
    #[error("{0}")]
    Stopped(String),
    /// A message is too long for the server's limits.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The server's answer to this message is awaited; it cannot be cancelled now.
    #[error("message {0} is being sent right now; wait for the server's answer")]
    MessageInFlight(String),
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
    /// No message in the outbox has this id.
    #[error("no pending or failed message {0} in the outbox (see `hush outbox`)")]
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
