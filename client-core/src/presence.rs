//! Presence as apps see it: whether a contact is online, or when they were last seen, at the
//! granularity of an hour ([`Presence`]), and the timing of announcements ([`PresenceTiming`]).
//!
//! Presence travels end to end encrypted in online-only envelopes that the server never
//! stores (see `machine/presence.rs` for the protocol and PROTOCOL.md, "Presence"). Each
//! account can stop sharing its own presence ([`crate::Client::set_presence_sharing`]); it then
//! sees no one else's either.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One hour in ms: the granularity of "last seen".
pub const HOUR_MS: u64 = 60 * 60 * 1000;

/// What is known of a contact's presence.
///
/// "Last seen" is never more precise than the hour: `LastSeen { hour }` is the start of the
/// hour in which the contact was last heard from. JSON: `{"state": "online"}`,
/// `{"state": "last_seen", "hour": 1699999200000}`, `{"state": "unknown"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Presence {
    /// Nothing is known: the contact does not share their presence, this account does not
    /// share its own (then it sees no one's), or nothing was heard from them yet.
    Unknown,
    /// Connected: heard from within the quiet period ([`PresenceTiming::quiet`]).
    Online,
    /// Not connected (said so on a clean disconnect, or silent for the quiet period).
    LastSeen {
        /// Start of the hour (ms since the Unix epoch, a multiple of [`HOUR_MS`]) in which
        /// they were last heard from.
        hour: u64,
    },
}

impl Presence {
    /// "Last seen" during the hour that holds `ms` (ms since the Unix epoch).
    pub fn last_seen_at(ms: u64) -> Presence {
        Presence::LastSeen { hour: ms - ms % HOUR_MS }
    }

    /// For people, as of `now` (ms since the Unix epoch): `online`, `last seen within the
    /// hour`, `last seen within 5 hours`, `last seen within 3 days`, or `unknown`.
    pub fn describe(&self, now: u64) -> String {
        match *self {
            Presence::Unknown => "unknown".to_owned(),
            Presence::Online => "online".to_owned(),
            Presence::LastSeen { hour } => {
                // `hour` is rounded down, so the contact was seen at most this long ago.
                let hours = now.saturating_sub(hour).div_ceil(HOUR_MS).max(1);
                match hours {
                    1 => "last seen within the hour".to_owned(),
                    2..=47 => format!("last seen within {hours} hours"),
                    _ => format!("last seen within {} days", hours.div_ceil(24)),
                }
            }
        }
    }
}

/// When presence is announced and when a silent contact counts as offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceTiming {
    /// How often a connected client says again that it is online (online-only envelopes are
    /// lost while the receiver is offline; a receiver that connects later asks with a probe).
    pub heartbeat: Duration,
    /// A contact not heard from for this long counts as offline (a client that crashed or lost
    /// its network could not say so). Should exceed two heartbeats.
    pub quiet: Duration,
    /// A contact's probe is answered at most once in this long.
    pub answer_every: Duration,
}

impl Default for PresenceTiming {
    /// A heartbeat every 4 minutes, offline after 9 minutes of silence, at most one answer to a
    /// contact's probe a minute.
    fn default() -> Self {
        PresenceTiming {
            heartbeat: Duration::from_secs(4 * 60),
            quiet: Duration::from_secs(9 * 60),
            answer_every: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_is_rounded_down_to_the_hour_and_described_coarsely() {
        let t = 1_700_000_000_000;
        let Presence::LastSeen { hour } = Presence::last_seen_at(t) else { panic!("not last seen") };
        assert_eq!(hour % HOUR_MS, 0);
        assert!(hour <= t && t - hour < HOUR_MS);
        assert_eq!(Presence::LastSeen { hour }.describe(hour + 10), "last seen within the hour");
        assert_eq!(Presence::LastSeen { hour }.describe(hour + HOUR_MS + 1), "last seen within 2 hours");
        assert_eq!(Presence::LastSeen { hour }.describe(hour + 50 * HOUR_MS), "last seen within 3 days");
        assert_eq!(Presence::Online.describe(t), "online");
        assert_eq!(Presence::Unknown.describe(t), "unknown");
    }

    #[test]
    fn presence_has_a_stable_json_form() {
        let all = [Presence::Unknown, Presence::Online, Presence::LastSeen { hour: 1_699_999_200_000 }];
        let json = serde_json::to_value(all).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_json_snapshot!(json);
        let back: Vec<Presence> = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, all);
    }
}
