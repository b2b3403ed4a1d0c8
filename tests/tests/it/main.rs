//! End-to-end tests: each test starts its own `hushd` process and talks to it
//! over real sockets, as a client would.

mod abuse;
mod accounts;
mod auth;
mod cluster;
mod delivery;
mod device_set;
mod frames;
mod groups;
mod idempotency;
mod large_groups;
mod limits;
mod linking;
mod ops;
mod push;
mod replicas;
mod robustness;
mod schemathesis;
mod storage;
