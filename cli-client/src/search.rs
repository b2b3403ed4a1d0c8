//! `hush search QUERY` and the daemon's `search` method: the local history searched (nothing
//! is sent to the server), best hits first.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use hush_client_core::{Client, ClientError, SearchHit, SearchOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::output;

/// Parameters of the daemon's `search` method: the same as `hush search`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The text to find.
    pub query: String,
    /// Only in the conversation with this username, or in this group:<uuid>.
    #[serde(default)]
    pub conversation: Option<String>,
    /// At most this many hits.
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    hush_client_core::DEFAULT_SEARCH_LIMIT
}

/// A hit as JSON: the message (as `history` prints it), `matches` (byte ranges of `body`
/// where the query occurs, `{"start","end"}`) and `newer` (how many messages of its
/// conversation follow it: `history CONVERSATION --limit newer+1` starts with it).
pub fn hit_json(hit: &SearchHit) -> Value {
    let mut v = output::message_json(&hit.message);
    if let Some(obj) = v.as_object_mut() {
        let matches: Vec<Value> = hit.matches.iter().map(|r| json!({ "start": r.start, "end": r.end })).collect();
        obj.insert("matches".into(), Value::Array(matches));
        obj.insert("newer".into(), json!(hit.newer));
    }
    v
}

/// A hit as one line of text, like `history` prints the message, with every match marked:
/// in reverse video on a terminal, else in `[` `]`.
pub fn hit_text(hit: &SearchHit, terminal: bool) -> String {
    let (open, close) = if terminal { ("\x1b[7m", "\x1b[0m") } else { ("[", "]") };
    let body = &hit.message.body;
    let mut marked = String::with_capacity(body.len() + 8 * hit.matches.len());
    let mut at = 0;
    for r in &hit.matches {
        let (Some(before), Some(found)) = (body.get(at..r.start), body.get(r.clone())) else { continue };
        marked.push_str(before);
        marked.push_str(open);
        marked.push_str(found);
        marked.push_str(close);
        at = r.end;
    }
    marked.push_str(body.get(at..).unwrap_or_default());
    let mut record = hit.message.clone();
    record.body = marked;
    output::message_text(&record)
}

/// `hush search QUERY [--conversation X] [--limit N]`: one line per hit, best first.
pub async fn run(ctx: &Ctx, query: &str, options: SearchOptions) -> anyhow::Result<()> {
    let client = ctx.open().await?;
    let result = async {
        let hits = client.search(query, options).await.context("cannot search the local history")?;
        let terminal = std::io::stdout().is_terminal();
        for hit in &hits {
            ctx.printer.emit(&hit_json(hit), &hit_text(hit, terminal))?;
        }
        if hits.is_empty() && !ctx.printer.json {
            eprintln!("no message contains {query:?}");
        }
        Ok(())
    }
    .await;
    let _ = client.shutdown().await;
    result
}

/// The daemon's `search` method: `{"hits":[<hit>...]}`.
pub async fn rpc(client: &Client, p: SearchParams) -> Result<Value, ClientError> {
    let options = SearchOptions { conversation: p.conversation, limit: p.limit };
    let hits = client.search(&p.query, options).await?;
    Ok(json!({ "hits": hits.iter().map(hit_json).collect::<Vec<_>>() }))
}

#[cfg(test)]
mod tests {
    use hush_client_core::{MessageDirection, MessageId, MessageKind, MessageRecord, MessageStatus};

    use super::*;

    fn hit(body: &str, matches: Vec<std::ops::Range<usize>>) -> SearchHit {
        let message = MessageRecord {
            id: MessageId([1; 16]),
            conversation: "bob".into(),
            from: "bob".into(),
            from_device: 1,
            direction: MessageDirection::Incoming,
            body: body.into(),
            sent_at: 0,
            received_at: 0,
            lamport: 1,
            group_seq: 0,
            kind: MessageKind::Text,
            status: MessageStatus::Received,
            local_seq: 5,
        };
        SearchHit { message, matches, newer: 2 }
    }

    #[test]
    fn every_match_is_marked_in_the_text_form() {
        let h = hit("明天见, 明天 party", vec![0..6, 11..17]);
        assert_eq!(hit_text(&h, false), "[1970-01-01 00:00:00] bob: [明天]见, [明天] party");
        assert!(hit_text(&h, true).contains("\x1b[7m明天\x1b[0m见"));
        let json = hit_json(&h);
        assert_eq!(json["matches"], json!([{ "start": 0, "end": 6 }, { "start": 11, "end": 17 }]));
        assert_eq!((json["newer"].clone(), json["local_seq"].clone()), (json!(2), json!(5)));
    }
}
