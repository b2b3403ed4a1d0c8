//! `hushd`, the hush relay server.
//!
//! It stores and forwards end-to-end-encrypted envelopes and never sees a
//! plaintext. Layers, from the outside in:
//!
//! - [`serve`]: binds the listener, wires everything together, graceful shutdown.
//! - [`http`]: the REST API (accounts, devices, prekeys, certificates) and its
//!   OpenAPI document; [`http::router`] is the whole HTTP surface.
//! - [`ws`]: the WebSocket endpoint: challenge/response authentication, delivery
//!   with an in-flight window, acks, sends.
//! - [`commit`]: the group-commit writer that makes a send durable before it is
//!   acknowledged, and then wakes the recipients' connections through the [`hub`].
//! - [`store`]: durable state behind the [`store::Store`] trait (SQLite, Postgres).
//! - [`trust`]: one trust root per deployment, recorded in the database.
//!
//! The delivery contract these implement is in DESIGN.md; the protocol in docs/PROTOCOL.md.

pub mod cluster;
pub mod commit;
pub mod config;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod push;
pub mod serve;
pub mod state;
pub mod store;
pub mod trust;
pub mod ws;
