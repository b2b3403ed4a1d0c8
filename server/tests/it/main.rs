//! Integration tests of hushd, one binary for the crate (STYLE.md item 9): one module per area.

#![allow(clippy::unwrap_used)]

mod fuzz;
mod openapi;
mod registration;
mod store;
