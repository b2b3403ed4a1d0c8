//! Local full-text search: what [`crate::Client::search`] takes and returns.
//!
//! Search runs on this device's store only (the server never sees a query or a body). It finds
//! text messages of every conversation, one-to-one and group, whose body contains the query
//! as a substring, ignoring case; English words, parts of words, emoji and CJK text alike. The
//! rules, the ranking and the index behind it: [`crate::store::search`].

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::types::MessageRecord;

/// How many hits [`SearchOptions::default`] asks for.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;

/// Where to search and how many hits to return ([`crate::Client::search`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchOptions {
    /// Only in the conversation with this username, or in this group (`group:<uuid>`);
    /// `None` searches every conversation (except groups whose invite is not accepted).
    pub conversation: Option<String>,
    /// At most this many hits, best first (default [`DEFAULT_SEARCH_LIMIT`]).
    pub limit: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self { conversation: None, limit: DEFAULT_SEARCH_LIMIT }
    }
}

/// One message a search found, with where the query occurs in it and where it stands in its
/// conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The message, as [`crate::Client::history`] shows it: its `conversation` (username or
    /// `group:<uuid>`), `id`, author (`from`), `sent_at`, `body` and `local_seq`.
    pub message: MessageRecord,
    /// Byte ranges of `message.body` where the query occurs, in order, for highlighting
    /// (`&body[range]`); always on character boundaries.
    pub matches: Vec<Range<usize>>,
    /// How many messages of the conversation come after this one in display order: to show
    /// the message in its context, page the history with
    /// `client.history(&hit.message.conversation, hit.newer + 1 + context)`, which starts
    /// `context` messages before it.
    pub newer: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{MessageDirection, MessageId, MessageKind, MessageStatus};

    #[test]
    fn a_search_hit_has_a_stable_json_form_and_round_trips() {
        let body = "明天见 🎉 party".to_owned();
        let hit = SearchHit {
            message: MessageRecord {
                id: MessageId([0xcd; 16]),
                conversation: "group:11111111-1111-1111-1111-111111111111".into(),
                from: "bob".into(),
                from_device: 1,
                direction: MessageDirection::Incoming,
                body: body.clone(),
                sent_at: 1_700_000_000_000,
                received_at: 1_700_000_000_500,
                lamport: 0,
                group_seq: 12,
                kind: MessageKind::Text,
                status: MessageStatus::Received,
                local_seq: 40,
            },
            matches: vec![0..9, 15..20],
            newer: 3,
        };
        assert_eq!(&body[hit.matches[0].clone()], "明天见");
        let json = serde_json::to_value(&hit).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_json_snapshot!(json);
        let back: SearchHit = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, hit);
        let options = SearchOptions { conversation: Some("bob".into()), ..SearchOptions::default() };
        assert_eq!(serde_json::to_value(&options).ok(), Some(serde_json::json!({"conversation": "bob", "limit": 20})));
    }
}
