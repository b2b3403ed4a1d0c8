//! End-to-end tests of hush-client-core: a real `hushd` process and client-core instances,
//! each with its own data directory.

#![allow(clippy::unwrap_used)]

mod crash;
mod delivery;
mod groups;
mod identity;
mod lifecycle;
mod retry;
mod support;
