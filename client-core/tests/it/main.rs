//! End-to-end tests of hush-client-core: a real `hushd` process and client-core instances,
//! each with its own data directory.

#![allow(clippy::unwrap_used)]

mod crash;
mod delivery;
mod group_support;
mod groups;
mod identity;
mod large_groups;
mod lifecycle;
mod linking;
mod multi_device;
mod presence;
mod retry;
mod search;
mod support;
