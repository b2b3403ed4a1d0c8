//! `hush-bench search`: local full-text search, no server. Fills a fresh client SQLite store
//! (the one `hush` and the TUI use, through its public `ClientStore` API) with N messages
//! across one-to-one and group conversations, then times searches of English words, parts of
//! words, phrases, emoji and CJK text (`ClientStore::search`, the query `Client::search` runs:
//! the index lookup, the ranking, the match ranges and each hit's position in its conversation).

use std::time::Instant;

use anyhow::Context as _;
use hush_client_core::store::{Batch, ClientStore, MessageRow, SearchQuery, SqliteStore};
use hush_client_core::{ConversationId, MessageDirection, MessageId, MessageKind, MessageStatus};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use uuid::Uuid;

/// What to run.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Messages in the store.
    pub messages: usize,
    /// Searches to time.
    pub queries: usize,
}

const WORDS: &[&str] = &[
    "lunch", "tomorrow", "meeting", "the", "a", "is", "at", "we", "you", "see", "later", "project", "deadline",
    "coffee", "train", "late", "sorry", "thanks", "great", "idea", "office", "weekend", "party", "birthday", "photos",
    "send", "call", "me", "when", "free", "dinner", "tonight", "review", "the", "draft", "release", "notes", "bug",
    "fixed", "deploy", "server", "down", "again", "what", "time", "does", "it", "start",
];
const EMOJI: &[&str] = &["🎉", "👍", "😂", "❤️", "🙏", "🔥", "☕", "🍕"];
const CJK: &[&str] = &[
    "明天见",
    "今天的会议改到下午三点",
    "谢谢你的帮助",
    "周末一起吃饭吧",
    "我到了",
    "ありがとう、また明日",
    "会議は十時からです",
    "내일 봐요",
    "생일 축하해요",
];
/// The searches timed, in turn: words, parts of words, phrases, emoji, CJK (some of one or
/// two characters, answered by a scan), and one that finds nothing.
const QUERIES: &[&str] = &[
    "lunch",
    "meeting",
    "deadl",
    "orrow",
    "see you",
    "the draft",
    "party tonight",
    "明天见",
    "会议",
    "明天",
    "🎉",
    "吃饭",
    "ありがとう",
    "내일",
    "deploy",
    "zebra crossing",
];

fn body(rng: &mut StdRng) -> String {
    if rng.random_ratio(1, 8) {
        return (*CJK.choose(rng).unwrap_or(&"明天见")).to_owned();
    }
    let words: Vec<&str> = (0..rng.random_range(3..25)).filter_map(|_| WORDS.choose(rng).copied()).collect();
    let mut text = words.join(" ");
    if rng.random_ratio(1, 5) {
        text.push(' ');
        text.push_str(EMOJI.choose(rng).unwrap_or(&"🎉"));
    }
    text
}

/// Fills the store, times the queries, and returns the figures line.
pub async fn search(o: &SearchOptions) -> anyhow::Result<String> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let store = SqliteStore::open(&dir.path().join("client.db")).await.context("open the store")?;
    let mut rng = StdRng::seed_from_u64(7);
    let me = Uuid::from_u128(1);
    let peers: Vec<Uuid> = (2..12).map(Uuid::from_u128).collect();
    let conversations: Vec<ConversationId> = peers
        .iter()
        .map(|p| ConversationId::Direct(*p))
        .chain((100..104).map(|g| ConversationId::Group(Uuid::from_u128(g))))
        .collect();
    let fill = Instant::now();
    let mut batch = Batch::default();
    for n in 0..o.messages {
        let conversation = *conversations.choose(&mut rng).context("no conversation")?;
        let outgoing = rng.random_ratio(1, 3);
        let sender = match (outgoing, conversation) {
            (true, _) => me,
            (false, ConversationId::Direct(p)) => p,
            (false, ConversationId::Group(_)) => *peers.choose(&mut rng).context("no peer")?,
        };
        let at = 1_700_000_000_000 + n as u64 * 60_000;
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        batch.messages.push(MessageRow {
            id: MessageId(id),
            conversation,
            sender,
            sender_device: 1,
            direction: if outgoing { MessageDirection::Outgoing } else { MessageDirection::Incoming },
            body: body(&mut rng),
            sent_at: at,
            received_at: at + 500,
            lamport: n as u64 + 1,
            group_seq: if conversation.group().is_some() { n as u64 + 1 } else { 0 },
            kind: MessageKind::Text,
            status: if outgoing { MessageStatus::Delivered } else { MessageStatus::Received },
            local_seq: 0,
        });
        if batch.messages.len() == 500 {
            store.commit(std::mem::take(&mut batch)).await?;
        }
    }
    store.commit(batch).await?;
    eprintln!("search: {} messages stored in {:.1} s", o.messages, fill.elapsed().as_secs_f64());

    let mut times = Vec::with_capacity(o.queries);
    let mut by_query: Vec<(usize, f64)> = vec![(0, 0.0); QUERIES.len()];
    for (n, text) in QUERIES.iter().enumerate().cycle().take(o.queries) {
        let query = SearchQuery { text: (*text).to_owned(), conversation: None, exclude: Vec::new(), limit: 20 };
        let start = Instant::now();
        let hits = store.search(&query).await?.len();
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        times.push(ms);
        by_query[n] = (hits, by_query[n].1.max(ms));
    }
    store.close().await;
    if times.is_empty() {
        anyhow::bail!("--queries must be at least 1");
    }
    for (text, (hits, max)) in QUERIES.iter().zip(&by_query) {
        eprintln!("search: {text:?} (limit 20): {hits} hits, slowest {max:.2} ms");
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(format!(
        "search messages={} queries={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        o.messages,
        times.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    ))
}
