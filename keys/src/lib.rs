//! Key material that both the hush server and its clients verify.
//!
//! - [`auth`]: device authentication. Each device has an ed25519 [`auth::DeviceSigningKey`];
//!   the server stores only the public [`auth::DeviceAuthKey`] and checks signed WebSocket
//!   challenges and signed REST requests (`Authorization: Hush-Sig ...`, [`auth::AuthHeader`]).
//! - [`prekeys`]: what the server checks before storing uploaded identity keys and prekeys
//!   (key formats, and the identity key's XEdDSA signatures on signed prekeys).
//! - [`certs`]: sealed-sender certificates. [`certs::ServerKeys`] (trust root, signer, server
//!   certificate) issues sender certificates; clients check them with
//!   [`certs::verify_sender_certificate`]. [`certs::aci_string`] names an account for libsignal.
//! - [`registration`]: the identity-key signature that proves a registration owns the key
//!   it registers, over a server-issued challenge ([`registration::ChallengeKey`]).
//! - [`provision`]: linking a new device to an account. The new device shows a
//!   [`provision::LinkCode`]; the existing device seals the account's keys to it (ephemeral
//!   X25519, HKDF-SHA256, AES-256-GCM-SIV) for the server to relay unread. Also the
//!   [`provision::ArchiveKey`] that encrypts the message history archive, chunk by chunk.
//!
//! The wire formats are described in `docs/PROTOCOL.md` ("Authentication", "Device linking").
//!
//! This crate does no I/O and keeps no clock: callers pass time (`now_ms`, `timestamp_ms`)
//! and randomness (`&mut impl CryptoRng`, rand 0.9) in. It never logs, and no `Debug` output
//! of a private key shows its bytes. Every failure is a [`KeyError`], except in [`provision`]
//! (client-side only), whose failures are a [`ProvisionError`].

#![warn(missing_docs)]

pub mod auth;
pub mod certs;
mod error;
pub mod prekeys;
pub mod provision;
pub mod registration;

pub use certs::aci_string;
pub use error::{KeyError, ProvisionError};
