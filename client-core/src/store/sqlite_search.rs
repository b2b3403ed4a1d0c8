//! Full-text search on SQLite: the FTS5 `message_search` index (schema version 4) for queries
//! of [`MIN_INDEXED_CHARS`](crate::store::search::MIN_INDEXED_CHARS) characters or more, a
//! `LIKE` scan of the bodies for shorter ones. The rules are in [`crate::store::search`].

use sqlx::{Row, SqlitePool};

use super::{db, message_from_row, u};
use crate::error::StoreError;
use crate::store::search::{fts5_phrase, like_pattern, match_ranges, uses_index};
use crate::store::{SearchQuery, SearchRow};

/// Where a search may look: `?2` a conversation (or NULL for all), `?3` a JSON array of
/// conversations to leave out.
const FILTER: &str = "(?2 IS NULL OR m.conversation = ?2) AND m.conversation NOT IN (SELECT value FROM json_each(?3))";

/// The ranked hits of an index query (`?1` an FTS5 phrase), at most `?4`.
const INDEXED: &str = "SELECT m.local_seq AS seq, s.rank AS score, m.sent_at AS sent_at \
     FROM message_search s JOIN messages m ON m.local_seq = s.rowid \
     WHERE message_search MATCH ?1 AND {filter} \
     ORDER BY s.rank, m.sent_at DESC, m.local_seq DESC LIMIT ?4";

/// The newest hits of a scan (`?1` a `LIKE` pattern), at most `?4`.
const SCANNED: &str = r#"SELECT m.local_seq AS seq, 0.0 AS score, m.sent_at AS sent_at
     FROM messages m WHERE m.kind = '"text"' AND m.body LIKE ?1 ESCAPE '\' AND {filter}
     ORDER BY m.sent_at DESC, m.local_seq DESC LIMIT ?4"#;

/// How many messages of a hit's conversation come after it in display order
/// ([`crate::store::display_order`]), computed for the final hits only.
const NEWER: &str = "CASE WHEN m.conversation LIKE 'group:%' \
     THEN (SELECT COUNT(*) FROM messages n WHERE n.conversation = m.conversation \
           AND (n.group_seq = 0, n.group_seq, n.local_seq) > (m.group_seq = 0, m.group_seq, m.local_seq)) \
     ELSE (SELECT COUNT(*) FROM messages n WHERE n.conversation = m.conversation \
           AND (n.lamport, n.sender, n.sender_device, n.id) > (m.lamport, m.sender, m.sender_device, m.id)) END";

/// [`crate::store::ClientStore::search`] on SQLite.
pub(super) async fn search(pool: &SqlitePool, query: &SearchQuery) -> Result<Vec<SearchRow>, StoreError> {
    if query.text.is_empty() || query.limit == 0 {
        return Ok(Vec::new());
    }
    let indexed = uses_index(&query.text);
    let (hits, pattern) = if indexed {
        (INDEXED.replace("{filter}", FILTER), fts5_phrase(&query.text))
    } else {
        (SCANNED.replace("{filter}", FILTER), like_pattern(&query.text))
    };
    let sql = format!(
        "WITH hits AS ({hits}) SELECT m.*, {NEWER} AS newer FROM hits JOIN messages m ON m.local_seq = hits.seq \
         ORDER BY hits.score, hits.sent_at DESC, hits.seq DESC"
    );
    let exclude: Vec<String> = query.exclude.iter().map(ToString::to_string).collect();
    let rows = sqlx::query(&sql)
        .bind(pattern)
        .bind(query.conversation.map(|c| c.to_string()))
        .bind(serde_json::to_string(&exclude).map_err(StoreError::backend)?)
        .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            let message = message_from_row(r)?;
            let matches = match_ranges(&message.body, &query.text);
            Ok(SearchRow { newer: u(r.try_get("newer").map_err(db)?), matches, message })
        })
        .collect()
}
