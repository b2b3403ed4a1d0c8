//! Integration tests of hush-wire, one binary for the crate (STYLE.md item 9).

#![allow(clippy::unwrap_used)]

mod frames_fuzz;
mod support;
