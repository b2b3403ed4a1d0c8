//! Support library for hush's end-to-end tests.
//!
//! Every test starts its own `hushd` process ([`TestServer`]) on a free port
//! with a fresh data directory, registers accounts with valid libsignal key
//! material ([`TestAccount`], [`keys`]), talks REST with signed requests
//! ([`RestClient`], with the group calls of [`groups`]) and speaks the WebSocket
//! protocol ([`WsClient`], group frames included).
//!
//! Waiting is always bounded: every helper that waits for the server has a
//! deadline ([`WAIT`] by default) and panics with a message that says what it
//! was waiting for, never a fixed sleep.

pub mod cluster;
pub mod device;
pub mod groups;
pub mod keys;
pub mod link;
pub mod push;
pub mod rest;
pub mod server;
pub mod ws;

pub use device::{TestAccount, TestDevice};
pub use groups::{distribute_request, group_send_request, to_member_devices};
pub use link::{ProvisioningClient, ProvisioningEvent, link_request};
pub use rest::{ApiResponse, RestClient};
pub use server::{TestServer, TestServerBuilder};
pub use ws::{Closed, Event, WsClient, message, recipient, send_request, stream_position, to_all_devices};

use std::time::Duration;

/// How long any single wait on the server may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Milliseconds since the Unix epoch, from the local clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A lowercase username that is unique per call: `prefix` plus a random suffix.
pub fn unique_username(prefix: &str) -> String {
    use rand::Rng as _;
    let suffix: u32 = rand::rng().random();
    format!("{prefix}_{suffix:08x}")
}

/// `n` random bytes, e.g. to stand in for a sealed-sender ciphertext.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore as _;
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}
