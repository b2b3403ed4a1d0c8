//! The actor's part of presence: the clean disconnect that waits for the OFFLINE sends, and
//! the presence of a contact named by username. Everything else is the machine's
//! (`machine/presence.rs`).

use std::time::Duration;

use tokio::time::Instant;

use super::Actor;
use crate::driver::now_ms;
use crate::error::ClientError;

/// How long a clean disconnect waits for the server to take the OFFLINE presence sends.
const OFFLINE_WAIT: Duration = Duration::from_secs(2);

impl Actor {
    /// A clean disconnect: the machine tells the contacts this device goes offline, and the
    /// connection stays open until the server has taken those sends (at most
    /// [`OFFLINE_WAIT`]): it drops what is still pending when the socket closes.
    pub(super) async fn say_offline(&mut self) {
        self.machine.set_presence_active(false);
        if self.conn.as_ref().is_none_or(|c| c.authenticated.is_none()) {
            return;
        }
        if let Err(e) = self.machine.going_offline(now_ms(), &mut self.rng).await {
            tracing::warn!(error = %e, "cannot announce going offline");
            return;
        }
        self.flush();
        let deadline = Instant::now() + OFFLINE_WAIT;
        while !self.machine.offline_announced() {
            match tokio::time::timeout_at(deadline, self.ws_rx.recv()).await {
                Ok(Some(event)) => {
                    if let Err(e) = self.ws_event(event).await {
                        tracing::warn!(error = %e, "client step failed");
                    }
                    self.flush();
                }
                _ => break,
            }
        }
    }

    /// What is known of `username`'s presence (unknown for someone who is not a contact).
    pub(super) async fn presence_of(&self, username: &str) -> Result<crate::presence::Presence, ClientError> {
        let username = username.trim().to_lowercase();
        Ok(match self.machine.store().contact_by_username(&username).await? {
            Some(c) => self.machine.presence(c.account_id),
            None => crate::presence::Presence::Unknown,
        })
    }
}
