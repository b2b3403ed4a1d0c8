//! Full-text search over stored message bodies: the query and result types of
//! [`super::ClientStore::search`], and the matching and ranking rules both stores share.
//!
//! What is searched: the bodies of text messages ([`crate::MessageKind::Text`]) of every
//! conversation, one-to-one and group, however they were stored (received, sent, copied from
//! another own device, imported from a link history archive). Group system entries ("alice
//! added bob") are not searched. A query matches a body that contains it as a substring,
//! ignoring case (ASCII case in every store; the SQLite index folds other scripts' case too).
//!
//! The SQLite store answers queries of [`MIN_INDEXED_CHARS`] characters or more from an FTS5
//! index with the `trigram` tokenizer, which finds substrings in any script (CJK has no spaces
//! between words) and is kept in step with the `messages` table by triggers. Shorter queries (a
//! single CJK character, one emoji) cannot use trigrams: they scan the bodies (`LIKE`), which
//! is slower on a large store, and are not ranked.

use std::ops::Range;

use super::{MessageRow, display_order};
use crate::types::{ConversationId, MessageKind};

/// The shortest query (in characters, i.e. Unicode scalar values) the index answers; shorter
/// ones are answered by a scan of the bodies, newest first.
pub const MIN_INDEXED_CHARS: usize = 3;

/// What to look for ([`super::ClientStore::search`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// The text to find, taken literally (no query syntax: `"`, `*`, `OR`, `NEAR(` are
    /// characters like any other). An empty text finds nothing.
    pub text: String,
    /// Only in this conversation (`None`: in all).
    pub conversation: Option<ConversationId>,
    /// Never in these conversations (e.g. groups whose invite is not accepted).
    pub exclude: Vec<ConversationId>,
    /// At most this many results.
    pub limit: usize,
}

/// One message a search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRow {
    /// The message.
    pub message: MessageRow,
    /// Byte ranges of `message.body` where the query occurs (non-overlapping, in order;
    /// empty only if the index matched where [`match_ranges`] does not, e.g. a case folding
    /// of a script this crate does not fold).
    pub matches: Vec<Range<usize>>,
    /// How many messages of its conversation come after it in display order
    /// ([`super::display_order`]): [`super::ClientStore::messages`] with a limit of
    /// `newer + 1` (or more) returns a page that starts with (or contains) this message.
    pub newer: u64,
}

/// Case folding used for matching: the simple lowercase of a character when that is one
/// character, else the character itself (so a fold never changes a body's byte offsets' meaning).
fn fold(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// The byte ranges of `body` where `query` occurs, ignoring case, left to right and not
/// overlapping. Empty for an empty query.
pub fn match_ranges(body: &str, query: &str) -> Vec<Range<usize>> {
    let needle: Vec<char> = query.chars().map(fold).collect();
    let mut out = Vec::new();
    if needle.is_empty() {
        return out;
    }
    let mut from = 0;
    while let Some(rest) = body.get(from..).filter(|r| !r.is_empty()) {
        match prefix_len(rest, &needle) {
            Some(len) => {
                out.push(from..from + len);
                from += len;
            }
            None => from += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// The length in bytes of the prefix of `s` that folds to `needle`, if it does.
fn prefix_len(s: &str, needle: &[char]) -> Option<usize> {
    let mut chars = s.char_indices();
    for want in needle {
        let (_, c) = chars.next()?;
        if fold(c) != *want {
            return None;
        }
    }
    Some(chars.next().map_or(s.len(), |(i, _)| i))
}

/// Whether a query is answered by the index (else by a scan, unranked).
pub fn uses_index(query: &str) -> bool {
    query.chars().count() >= MIN_INDEXED_CHARS
}

/// `query` as one FTS5 phrase: in double quotes, with embedded double quotes doubled, so
/// nothing in it is read as query syntax (`*`, `OR`, `NEAR(`, `:`, `^`, parentheses).
pub fn fts5_phrase(query: &str) -> String {
    format!("\"{}\"", query.replace('"', "\"\""))
}

/// `query` as a `LIKE` pattern matching any body that contains it (with `ESCAPE '\'`).
pub fn like_pattern(query: &str) -> String {
    let mut out = String::with_capacity(query.len() + 2);
    out.push('%');
    for c in query.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The Okapi BM25 weight of a body (higher is better) with `hits` occurrences of the query
/// and `len` characters, where bodies average `avg_len` characters: what FTS5's `bm25()`
/// computes for a one-phrase query, up to the phrase's inverse document frequency, which is
/// the same for every body and so does not change the order. Used by the in-memory store.
pub fn bm25_weight(hits: usize, len: usize, avg_len: f64) -> f64 {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let f = hits as f64;
    let norm = if avg_len > 0.0 { len as f64 / avg_len } else { 1.0 };
    f * (K1 + 1.0) / (f + K1 * (1.0 - B + B * norm))
}

/// A search over messages held in memory, by the same rules as the SQLite store (ranked by
/// [`bm25_weight`] over character lengths, where SQLite counts trigrams: the order agrees
/// except between bodies of nearly equal weight).
pub(super) fn scan<'a>(messages: impl Iterator<Item = &'a MessageRow> + Clone, query: &SearchQuery) -> Vec<SearchRow> {
    if query.text.is_empty() || query.limit == 0 {
        return Vec::new();
    }
    let texts = messages.clone().filter(|m| m.kind == MessageKind::Text);
    let (count, total) = texts.clone().fold((0usize, 0usize), |(n, len), m| (n + 1, len + m.body.chars().count()));
    let avg_len = if count == 0 { 0.0 } else { total as f64 / count as f64 };
    let ranked = uses_index(&query.text);
    let mut hits: Vec<(f64, &MessageRow, Vec<Range<usize>>)> = texts
        .filter(|m| query.conversation.is_none_or(|c| c == m.conversation))
        .filter(|m| !query.exclude.contains(&m.conversation))
        .filter_map(|m| {
            let matches = match_ranges(&m.body, &query.text);
            let weight = if ranked { bm25_weight(matches.len(), m.body.chars().count(), avg_len) } else { 0.0 };
            (!matches.is_empty()).then_some((weight, m, matches))
        })
        .collect();
    hits.sort_by(|(wa, a, _), (wb, b, _)| {
        wb.total_cmp(wa).then_with(|| (b.sent_at, b.local_seq).cmp(&(a.sent_at, a.local_seq)))
    });
    hits.truncate(query.limit);
    hits.into_iter()
        .map(|(_, m, matches)| {
            let newer = messages
                .clone()
                .filter(|n| n.conversation == m.conversation && display_order(n, m) == std::cmp::Ordering::Greater)
                .count() as u64;
            SearchRow { message: m.clone(), matches, newer }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_are_byte_ranges_ignoring_case_in_any_script() {
        assert_eq!(match_ranges("Lunch? lunch!", "LUNCH"), vec![0..5, 7..12]);
        let body = "明天见, 明天 🎉 party";
        let r = match_ranges(body, "明天");
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| &body[r.clone()] == "明天"));
        let r = match_ranges(body, "🎉 PA");
        assert_eq!(r.iter().map(|r| &body[r.clone()]).collect::<Vec<_>>(), vec!["🎉 pa"]);
        assert_eq!(match_ranges("ÉCOLE école", "école"), vec![0..6, 7..13]);
        assert_eq!(match_ranges("aaaa", "aa"), vec![0..2, 2..4], "not overlapping");
        assert!(match_ranges("abc", "").is_empty());
        assert!(match_ranges("ab", "abc").is_empty());
    }

    #[test]
    fn a_query_is_one_literal_phrase_for_fts5_and_like() {
        assert_eq!(fts5_phrase(r#"say "hi" OR NEAR(x*"#), r#""say ""hi"" OR NEAR(x*""#);
        assert_eq!(like_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
        assert!(uses_index("明天见") && !uses_index("明天") && !uses_index("🎉"));
    }

    #[test]
    fn bm25_prefers_more_hits_and_shorter_bodies() {
        assert!(bm25_weight(2, 10, 20.0) > bm25_weight(1, 10, 20.0));
        assert!(bm25_weight(1, 10, 20.0) > bm25_weight(1, 40, 20.0));
    }
}
