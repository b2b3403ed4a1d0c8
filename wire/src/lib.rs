//! The hush server<->client protocol.
//!
//! - [`frames`]: the WebSocket frames (`ClientFrame`, `ServerFrame`), generated
//!   from `proto/hush/v1/frames.proto` so a client in any language can be
//!   generated from the same schema, plus size-checked decoding that never
//!   panics on untrusted bytes.
//! - [`api`]: the JSON bodies of the REST API (`/v1/...`), with their OpenAPI schemas.
//! - [`limits`]: the numbers both sides must agree on.
//! - [`close`]: WebSocket close codes the server uses, and what they mean.
//! - [`link`]: the bytes a link proof signs when a new device joins an account.
//!
//! This crate does no I/O.

pub mod api;
pub mod close;
pub mod frames;
pub mod limits;
pub mod link;

pub use frames::{ClientFrame, FrameError, ServerFrame, decode_client_frame, decode_server_frame};
