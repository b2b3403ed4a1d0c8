//! WebSocket close codes sent by `hushd`. The close frame's reason text is a
//! short machine-readable word (the `REASON_*` constants) a client may match on.

/// The connection did what it was for (a provisioning socket delivered its message).
pub const NORMAL: u16 = 1000;
/// The server is shutting down; reconnect later (RFC 6455 "going away").
pub const GOING_AWAY: u16 = 1001;
/// A text frame, or another frame kind the protocol does not use.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// A frame larger than [`crate::limits::MAX_FRAME_BYTES`].
pub const TOO_BIG: u16 = 1009;
/// Authentication failed: unknown device or bad signature.
pub const AUTH_FAILED: u16 = 4001;
/// No `Auth` frame arrived in time.
pub const AUTH_TIMEOUT: u16 = 4002;
/// The same device connected again; this older connection is closed.
pub const REPLACED: u16 = 4003;
/// A frame that does not decode, or a frame that is not allowed now.
pub const MALFORMED: u16 = 4004;
/// The device was removed from its account.
pub const DEVICE_REMOVED: u16 = 4005;
/// The peer stopped answering pings.
pub const PING_TIMEOUT: u16 = 4006;
/// The peer stopped reading: one write could not finish within the server's write timeout.
/// Nothing is lost; undelivered envelopes stay in the mailbox for the next connection.
pub const SLOW_CONSUMER: u16 = 4007;
/// A provisioning socket's address expired before a message arrived (the link timeout).
pub const LINK_EXPIRED: u16 = 4008;
/// The server had too many connections still authenticating and dropped this one, the
/// oldest, for a newer one (RFC 6455 "try again later"); reconnect with backoff.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// Reason for [`NORMAL`] after a provisioning message.
pub const REASON_DELIVERED: &str = "delivered";
/// Reason for [`GOING_AWAY`].
pub const REASON_SHUTDOWN: &str = "server_shutdown";
/// Reason for [`UNSUPPORTED_DATA`].
pub const REASON_TEXT_FRAME: &str = "binary_frames_only";
/// Reason for [`TOO_BIG`].
pub const REASON_TOO_BIG: &str = "frame_too_large";
/// Reason for [`AUTH_FAILED`].
pub const REASON_AUTH_FAILED: &str = "auth_failed";
/// Reason for [`AUTH_TIMEOUT`].
pub const REASON_AUTH_TIMEOUT: &str = "auth_timeout";
/// Reason for [`REPLACED`].
pub const REASON_REPLACED: &str = "connected_elsewhere";
/// Reason for [`MALFORMED`].
pub const REASON_MALFORMED: &str = "malformed_frame";
/// Reason for [`DEVICE_REMOVED`].
pub const REASON_DEVICE_REMOVED: &str = "device_removed";
/// Reason for [`PING_TIMEOUT`].
pub const REASON_PING_TIMEOUT: &str = "ping_timeout";
/// Reason for [`SLOW_CONSUMER`].
pub const REASON_SLOW_CONSUMER: &str = "slow_consumer";
/// Reason for [`LINK_EXPIRED`].
pub const REASON_LINK_EXPIRED: &str = "link_expired";
/// Reason for [`TRY_AGAIN_LATER`].
pub const REASON_BUSY: &str = "server_busy";
/// The server hit an internal error (database down); reconnect with backoff.
pub const INTERNAL: u16 = 1011;
/// Reason for [`INTERNAL`].
pub const REASON_INTERNAL: &str = "server_error";
