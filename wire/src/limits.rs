//! Limits shared by server and clients (see DESIGN.md, "Limits").

/// Largest ciphertext for one device in one send.
pub const MAX_ENVELOPE_BYTES: usize = 96 * 1024;
/// Largest encoded `SendRequest` (all recipients and devices together).
pub const MAX_SEND_BYTES: usize = 256 * 1024;
/// Largest WebSocket message either side accepts: a full send plus framing slack.
pub const MAX_FRAME_BYTES: usize = MAX_SEND_BYTES + 16 * 1024;
/// Devices one account may have.
pub const MAX_DEVICES_PER_ACCOUNT: u32 = 6;
/// Highest device id libsignal accepts (device ids are 1..=127).
pub const MAX_DEVICE_ID: u32 = 127;
/// Longest device display name, in characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts).
pub const MAX_DEVICE_NAME_CHARS: usize = 64;
/// Highest registration id (libsignal needs it to fit in 14 bits).
pub const MAX_REGISTRATION_ID: u32 = 0x3FFF;
/// Unacknowledged envelopes the server sends to one connection before waiting for acks.
pub const IN_FLIGHT_WINDOW: u32 = 256;
/// Envelopes one device mailbox may hold.
pub const MAX_MAILBOX_ENVELOPES: u64 = 100_000;
/// Days an unacknowledged envelope is kept.
pub const RETENTION_DAYS: u32 = 30;
/// Prekeys of one kind in one upload.
pub const MAX_PREKEYS_PER_UPLOAD: usize = 100;
/// Clients refill one-time prekeys when fewer than this many are left.
pub const PREKEY_REFILL_THRESHOLD: u32 = 10;
/// Length of the random challenge the server sends on a new WebSocket.
pub const CHALLENGE_BYTES: usize = 32;
/// Seconds a REST request signature stays valid either side of the server clock.
pub const REST_AUTH_SKEW_SECS: u64 = 300;
/// Longest idempotency key of a `SendRequest`.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 64;
/// Hours the server remembers a send's idempotency key (a resend within them is answered,
/// not stored again).
pub const IDEMPOTENCY_RETENTION_HOURS: u64 = 24;
/// Seconds a registration challenge stays valid after the server issued it.
pub const REGISTRATION_CHALLENGE_SECS: u64 = 300;
/// Members per group (accounts; the server's default, configurable per deployment).
pub const MAX_GROUP_MEMBERS: u32 = 1_000;
/// Groups with more members than this are read from their stream by each member device's
/// cursor (fan-out on read) instead of a reference per member device per message (fan-out on
/// write); the server's default, configurable per deployment.
pub const GROUP_FANOUT_READ_ABOVE: u32 = 100;
/// Largest encrypted group title.
pub const MAX_GROUP_TITLE_BYTES: usize = 1024;
/// Largest encrypted group description.
pub const MAX_GROUP_DESCRIPTION_BYTES: usize = 8 * 1024;
/// Largest encrypted group avatar.
pub const MAX_GROUP_AVATAR_BYTES: usize = 64 * 1024;
/// Largest provisioning body (`PUT /v1/provisioning/{address}`), decoded.
pub const MAX_PROVISIONING_BODY: usize = 64 * 1024;
/// Seconds a link token and a provisioning address stay valid (the server's default,
/// `--link-timeout-secs`).
pub const LINK_TIMEOUT_SECS: u64 = 600;
/// Random bytes of a link token.
pub const LINK_TOKEN_BYTES: usize = 32;
/// Random bytes of a provisioning address (22 characters in base64url without padding).
pub const PROVISIONING_ADDRESS_BYTES: usize = 16;
/// Largest chunk of a history archive (`PUT /v1/link-archives/{id}/chunks/{index}`).
pub const LINK_ARCHIVE_CHUNK_BYTES: u32 = 1024 * 1024;
/// Largest history archive, all chunks together (the server's default,
/// `--max-link-archive-bytes`).
pub const MAX_LINK_ARCHIVE_BYTES: u64 = 64 * 1024 * 1024;
/// Seconds a history archive is kept (the server's default, `--link-archive-secs`).
pub const LINK_ARCHIVE_SECS: u64 = 3600;
/// Chunks one history archive may have (indexes `0..4096`).
pub const MAX_LINK_ARCHIVE_CHUNKS: u32 = 4096;
