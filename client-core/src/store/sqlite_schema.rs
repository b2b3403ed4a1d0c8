//! The client database's schema: versioned migrations driven by `PRAGMA user_version`.

use sqlx::SqlitePool;

use crate::error::StoreError;

fn db(e: sqlx::Error) -> StoreError {
    StoreError::backend(e)
}

/// Version 1: the schema of the one-to-one releases (made with `CREATE ... IF NOT EXISTS`,
/// so it also completes a database made before versions were counted).
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (name TEXT NOT NULL, device INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (name, device));
CREATE TABLE IF NOT EXISTS identities (name TEXT PRIMARY KEY, key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pre_keys (id INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signed_pre_keys (id INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS kyber_pre_keys (id INTEGER PRIMARY KEY, record BLOB NOT NULL, last_resort INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kyber_used (kyber_id INTEGER NOT NULL, signed_id INTEGER NOT NULL, base_key BLOB NOT NULL,
    PRIMARY KEY (kyber_id, signed_id, base_key));
CREATE TABLE IF NOT EXISTS sender_keys (name TEXT NOT NULL, device INTEGER NOT NULL, distribution TEXT NOT NULL,
    record BLOB NOT NULL, PRIMARY KEY (name, device, distribution));
CREATE TABLE IF NOT EXISTS contacts (account TEXT PRIMARY KEY, username TEXT NOT NULL, trust TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS contacts_username ON contacts (username);
CREATE TABLE IF NOT EXISTS messages (id BLOB PRIMARY KEY, peer TEXT NOT NULL, sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL, direction TEXT NOT NULL, body TEXT NOT NULL, sent_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL, lamport INTEGER NOT NULL, status TEXT NOT NULL, local_seq INTEGER NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS messages_order ON messages (peer, lamport, sender, sender_device, id);
CREATE TABLE IF NOT EXISTS processed_envelopes (seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS clocks (peer TEXT PRIMARY KEY, clock INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id BLOB NOT NULL,
    peer TEXT NOT NULL, kind TEXT NOT NULL, content BLOB NOT NULL, attempts INTEGER NOT NULL,
    not_before INTEGER NOT NULL, failed TEXT, last_error TEXT);
CREATE TABLE IF NOT EXISTS named_values (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sent_log (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    device INTEGER NOT NULL, timestamp INTEGER NOT NULL, peer TEXT NOT NULL, message_id BLOB NOT NULL,
    content BLOB NOT NULL, sent_at INTEGER NOT NULL, UNIQUE (name, device, timestamp));
"#;

/// Version 2: conversations (a peer account id, or `group:<uuid>`) instead of peers; groups,
/// distribution bindings, held group messages; group seqs and system entries in the history.
/// Existing rows keep their meaning: a peer's account id is its conversation id.
const SCHEMA_V2: &str = r#"
ALTER TABLE messages RENAME COLUMN peer TO conversation;
ALTER TABLE outbox RENAME COLUMN peer TO conversation;
ALTER TABLE clocks RENAME COLUMN peer TO conversation;
ALTER TABLE messages ADD COLUMN group_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT '"text"';
CREATE INDEX messages_group_order ON messages (conversation, group_seq, local_seq);
CREATE TABLE groups (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE distributions (group_id TEXT NOT NULL, distribution TEXT NOT NULL, account TEXT NOT NULL,
    device INTEGER NOT NULL, PRIMARY KEY (group_id, distribution));
CREATE TABLE held_group_messages (group_id TEXT NOT NULL, group_seq INTEGER NOT NULL,
    server_timestamp INTEGER NOT NULL, content BLOB NOT NULL, PRIMARY KEY (group_id, group_seq));
"#;

/// Version 3: group envelopes processed, by (group, group seq), whichever way they came
/// (a group's stream or the mailbox), so one that comes both ways is processed once.
const SCHEMA_V3: &str = r#"
CREATE TABLE processed_group_seqs (group_id TEXT NOT NULL, group_seq INTEGER NOT NULL,
    PRIMARY KEY (group_id, group_seq));
"#;

/// Version 4: full-text search. `message_search` is an FTS5 index (`trigram` tokenizer: any
/// substring of three or more characters, in any script) over the bodies of text messages,
/// keyed by `local_seq`; contentless (the bodies stay in `messages` only), kept in step by
/// triggers on every insert, delete and change of a body, and filled here from the messages
/// already stored. `message_seq_floor` remembers the highest `local_seq` ever deleted, so a
/// deleted message's position is never given to a new one (readers resume after positions).
const SCHEMA_V4: &str = r#"
CREATE VIRTUAL TABLE message_search USING fts5(body, content='', contentless_delete=1, tokenize='trigram');
INSERT INTO message_search (rowid, body) SELECT local_seq, body FROM messages WHERE kind = '"text"';
CREATE TRIGGER message_search_insert AFTER INSERT ON messages WHEN new.kind = '"text"' BEGIN
    INSERT INTO message_search (rowid, body) VALUES (new.local_seq, new.body);
END;
CREATE TRIGGER message_search_delete AFTER DELETE ON messages WHEN old.kind = '"text"' BEGIN
    DELETE FROM message_search WHERE rowid = old.local_seq;
END;
CREATE TRIGGER message_search_update AFTER UPDATE OF body, kind, local_seq ON messages BEGIN
    DELETE FROM message_search WHERE rowid = old.local_seq AND old.kind = '"text"';
    INSERT INTO message_search (rowid, body) SELECT new.local_seq, new.body WHERE new.kind = '"text"';
END;
CREATE TABLE message_seq_floor (id INTEGER PRIMARY KEY CHECK (id = 1), local_seq INTEGER NOT NULL);
CREATE TRIGGER message_seq_keep AFTER DELETE ON messages BEGIN
    INSERT INTO message_seq_floor (id, local_seq) VALUES (1, old.local_seq)
        ON CONFLICT (id) DO UPDATE SET local_seq = max(local_seq, excluded.local_seq);
END;
"#;

/// The schema versions in order: entry `n` brings a database from `user_version` n to n + 1.
/// Append new versions; never edit a released one.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], one version per transaction (`PRAGMA
/// user_version` is set in the same transaction), keeping every row. Refuses a database made
/// by a newer version.
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(pool).await.map_err(db)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {version}, newer than this program's {SCHEMA_VERSION}; use a newer hush"
        )));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let mut tx = pool.begin().await.map_err(db)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db)?;
        if from == 0 {
            // Databases from before `last_error` existed lack the column.
            let has: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('outbox') WHERE name = 'last_error'")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
            if has == 0 {
                sqlx::query("ALTER TABLE outbox ADD COLUMN last_error TEXT").execute(&mut *tx).await.map_err(db)?;
            }
        }
        sqlx::raw_sql(&format!("PRAGMA user_version = {}", from + 1)).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqliteConnectOptions;
    use uuid::Uuid;

    use super::super::SqliteStore;
    use super::*;
    use crate::store::ClientStore;
    use crate::types::{ConversationId, MessageKind};

    #[tokio::test]
    async fn an_outbox_made_before_last_error_existed_is_migrated() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("client.db");
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap_or_else(|e| panic!("{e}"));
        sqlx::raw_sql(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id BLOB NOT NULL, \
             peer TEXT NOT NULL, kind TEXT NOT NULL, content BLOB NOT NULL, attempts INTEGER NOT NULL, \
             not_before INTEGER NOT NULL, failed TEXT); \
             INSERT INTO outbox (message_id, peer, kind, content, attempts, not_before, failed) \
             VALUES (x'01010101010101010101010101010101', '00000000-0000-0000-0000-000000000009', '\"text\"', x'01', 2, 0, NULL);",
        )
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        pool.close().await;
        let store = SqliteStore::open(&path).await.unwrap_or_else(|e| panic!("{e}"));
        let head = store.outbox_head().await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no head"));
        assert_eq!((head.attempts, head.last_error), (2, None));
    }

    #[tokio::test]
    async fn a_database_of_the_group_schema_keeps_its_held_messages_and_gains_processed_group_seqs() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("client.db");
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap_or_else(|e| panic!("{e}"));
        let group = "00000000-0000-0000-0000-000000000007";
        for sql in [SCHEMA_V1, SCHEMA_V2] {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap_or_else(|e| panic!("{e}"));
        }
        sqlx::raw_sql(&format!(
            "INSERT INTO held_group_messages (group_id, group_seq, server_timestamp, content) \
             VALUES ('{group}', 4, 9, x'01'); PRAGMA user_version = 2;"
        ))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        pool.close().await;

        let store = SqliteStore::open(&path).await.unwrap_or_else(|e| panic!("{e}"));
        let group = Uuid::parse_str(group).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.held(group).await.unwrap_or_else(|e| panic!("{e}")).len(), 1);
        let mut batch = crate::store::Batch::default();
        batch.processed_group_seqs.push((group, 4));
        store.commit(batch).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(store.group_seq_processed(group, 4).await.unwrap_or_else(|e| panic!("{e}")));
        let version: i64 =
            sqlx::query_scalar("PRAGMA user_version").fetch_one(&store.pool).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn the_messages_of_a_database_made_before_search_are_indexed_by_the_migration() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("client.db");
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap_or_else(|e| panic!("{e}"));
        for sql in [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3] {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let peer = "00000000-0000-0000-0000-000000000009";
        let group = "group:00000000-0000-0000-0000-000000000007";
        let row = |id: u8, conversation: &str, kind: &str, body: &str, seq: u8| {
            format!(
                "INSERT INTO messages (id, conversation, sender, sender_device, direction, body, sent_at, received_at, \
                 lamport, status, local_seq, kind, group_seq) VALUES (x'{id:02x}{id:02x}{id:02x}{id:02x}{id:02x}{id:02x}\
                 {id:02x}{id:02x}{id:02x}{id:02x}{id:02x}{id:02x}{id:02x}{id:02x}{id:02x}{id:02x}', '{conversation}', \
                 '{peer}', 1, '\"incoming\"', '{body}', {seq}, {seq}, {seq}, '{{\"state\":\"received\"}}', {seq}, \
                 '\"{kind}\"', {seq});"
            )
        };
        let sql = [
            row(1, peer, "text", "明天见 at the station", 1),
            row(2, group, "text", "🎉 party at eight", 2),
            row(3, group, "system", "{\"kind\":\"party\"}", 3),
        ]
        .concat();
        sqlx::raw_sql(&format!("{sql} PRAGMA user_version = 3;"))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        pool.close().await;

        let store = SqliteStore::open(&path).await.unwrap_or_else(|e| panic!("{e}"));
        let search = |text: &str| crate::store::SearchQuery {
            text: text.into(),
            conversation: None,
            exclude: Vec::new(),
            limit: 10,
        };
        let found = |hits: Vec<crate::store::SearchRow>| hits.iter().map(|h| h.message.id.0[0]).collect::<Vec<_>>();
        assert_eq!(found(store.search(&search("明天见")).await.unwrap_or_else(|e| panic!("{e}"))), vec![1]);
        assert_eq!(found(store.search(&search("party")).await.unwrap_or_else(|e| panic!("{e}"))), vec![2]);
        assert_eq!(found(store.search(&search("🎉")).await.unwrap_or_else(|e| panic!("{e}"))), vec![2]);
        let indexed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_search")
            .fetch_one(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(indexed, 2, "text messages only");
        let version: i64 =
            sqlx::query_scalar("PRAGMA user_version").fetch_one(&store.pool).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn the_search_index_follows_inserts_changes_and_deletes_of_the_messages_table() {
        let store = SqliteStore::in_memory().await.unwrap_or_else(|e| panic!("{e}"));
        let row = |id: u8, body: &str| crate::store::MessageRow {
            id: crate::types::MessageId([id; 16]),
            conversation: ConversationId::Direct(Uuid::from_bytes([9; 16])),
            sender: Uuid::from_bytes([9; 16]),
            sender_device: 1,
            direction: crate::types::MessageDirection::Incoming,
            body: body.into(),
            sent_at: u64::from(id),
            received_at: u64::from(id),
            lamport: u64::from(id),
            group_seq: 0,
            kind: MessageKind::Text,
            status: crate::types::MessageStatus::Received,
            local_seq: 0,
        };
        let mut batch = crate::store::Batch::default();
        batch.messages.extend([row(1, "first words"), row(2, "second words"), row(3, "third words")]);
        store.commit(batch).await.unwrap_or_else(|e| panic!("{e}"));
        // A body changed in place (no code path does this today; the trigger keeps it right).
        sqlx::query("UPDATE messages SET body = 'changed text' WHERE local_seq = 2")
            .execute(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut batch = crate::store::Batch::default();
        batch.messages_remove.push(crate::types::MessageId([3; 16]));
        store.commit(batch).await.unwrap_or_else(|e| panic!("{e}"));
        let rowids: Vec<i64> =
            sqlx::query_scalar("SELECT rowid FROM message_search WHERE message_search MATCH 'words'")
                .fetch_all(&store.pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rowids, vec![1]);
        let changed: Vec<i64> =
            sqlx::query_scalar("SELECT rowid FROM message_search WHERE message_search MATCH 'changed'")
                .fetch_all(&store.pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changed, vec![2]);
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_search")
            .fetch_one(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count, 2);
    }

    #[tokio::test]
    async fn a_database_of_the_one_to_one_schema_keeps_its_messages() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("client.db");
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap_or_else(|e| panic!("{e}"));
        // Exactly what the one-to-one releases created (user_version 0), with a message, a
        // clock and an outbox entry in it.
        let peer = "00000000-0000-0000-0000-000000000009";
        sqlx::raw_sql(SCHEMA_V1).execute(&pool).await.unwrap_or_else(|e| panic!("{e}"));
        sqlx::raw_sql(&format!(
            "INSERT INTO messages (id, peer, sender, sender_device, direction, body, sent_at, received_at, lamport, \
             status, local_seq) VALUES (x'02020202020202020202020202020202', '{peer}', '{peer}', 1, '\"incoming\"', \
             'old hello', 1, 2, 5, '{{\"state\":\"received\"}}', 1); \
             INSERT INTO clocks (peer, clock) VALUES ('{peer}', 5); \
             INSERT INTO outbox (message_id, peer, kind, content, attempts, not_before, failed) \
             VALUES (x'03030303030303030303030303030303', '{peer}', '\"receipt\"', x'01', 0, 0, NULL);"
        ))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        pool.close().await;

        let store = SqliteStore::open(&path).await.unwrap_or_else(|e| panic!("{e}"));
        let peer = ConversationId::Direct(Uuid::parse_str(peer).unwrap_or_else(|e| panic!("{e}")));
        let history = store.messages(peer, 10).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].body.as_str(), history[0].lamport, history[0].kind),
            ("old hello", 5, MessageKind::Text)
        );
        assert_eq!(history[0].conversation, peer);
        assert_eq!(store.clock(peer).await.unwrap_or_else(|e| panic!("{e}")), 5);
        let head = store.outbox_head().await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no head"));
        assert_eq!(head.conversation, peer);
        let version: i64 =
            sqlx::query_scalar("PRAGMA user_version").fetch_one(&store.pool).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version, SCHEMA_VERSION);
        store.close().await;
        // Opening again runs nothing twice.
        let again = SqliteStore::open(&path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.messages(peer, 10).await.unwrap_or_else(|e| panic!("{e}")).len(), 1);
    }
}
