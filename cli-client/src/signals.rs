//! Waiting for SIGINT/SIGTERM and for optional deadlines.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

/// SIGINT and SIGTERM, installed once and awaited as often as needed.
#[derive(Debug)]
pub struct Stop {
    interrupt: Signal,
    terminate: Signal,
}

impl Stop {
    /// Installs the handlers (from now on these signals no longer kill the process).
    pub fn new() -> std::io::Result<Stop> {
        Ok(Stop { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    /// Returns when SIGINT or SIGTERM arrives.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Sleeps until `at`, or forever without a deadline.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
