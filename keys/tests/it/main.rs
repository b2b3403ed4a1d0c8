//! Integration tests of hush-keys, one module per public module.

#![allow(clippy::unwrap_used)]

mod auth;
mod certs;
mod fuzz;
mod fuzz_support;
mod header;
mod prekeys;
mod provision;
mod support;
