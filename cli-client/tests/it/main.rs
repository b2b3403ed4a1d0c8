//! Integration tests of the `hush` CLI: a real `hushd` process and real `hush` processes, each
//! user with a data directory of its own.

mod commands;
mod daemon;
mod devices;
mod errors;
mod groups;
mod hardening;
mod link;
mod presence;
mod push;
mod search;
mod support;
