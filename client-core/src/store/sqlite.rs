//! [`SqliteStore`]: the [`ClientStore`] on SQLite (sqlx, WAL, `synchronous=FULL`).

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{
    Address, Batch, ClientStore, ContactRow, GroupRow, HeldRow, KyberRow, LocalAccount, MessageRow, OutboxKind,
    OutboxRow, PROCESSED_ENVELOPE_WINDOW, PROCESSED_GROUP_SEQ_WINDOW, SENT_LOG_CAPACITY, SearchQuery, SearchRow,
    SentLogRow,
};
use crate::error::StoreError;
use crate::types::{ConversationId, MessageDirection, MessageId, MessageKind, MessageStatus, TrustState};
use schema::migrate;

#[path = "sqlite_schema.rs"]
mod schema;
#[path = "sqlite_search.rs"]
mod search;

const ACCOUNT_KEY: &str = "account";

/// A [`ClientStore`] in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::backend(e)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::backend)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|_| corrupt(what))
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| corrupt("account id"))
}

fn conversation(s: &str) -> Result<ConversationId, StoreError> {
    ConversationId::parse(s).ok_or_else(|| corrupt("conversation id"))
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (or creates) the database file `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        Self::with_options(options).await
    }

    /// A private in-memory database (for tests).
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(db)?;
        Self::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        // One connection: the actor is the only user, and it keeps writes strictly ordered.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db)?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    /// Closes the database (waits for the connection to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn blob(
        &self,
        sql: &str,
        bind: impl FnOnce(SqlQuery<'_>) -> SqlQuery<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = bind(sqlx::query(sql)).fetch_optional(&self.pool).await.map_err(db)?;
        row.map(|r| r.try_get::<Vec<u8>, _>(0).map_err(db)).transpose()
    }
}

type SqlQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn message_from_row(r: &SqliteRow) -> Result<MessageRow, StoreError> {
    let id: Vec<u8> = r.try_get("id").map_err(db)?;
    let direction: String = r.try_get("direction").map_err(db)?;
    let status: String = r.try_get("status").map_err(db)?;
    Ok(MessageRow {
        id: MessageId::from_slice(&id).ok_or_else(|| corrupt("message id"))?,
        conversation: conversation(&r.try_get::<String, _>("conversation").map_err(db)?)?,
        sender: uuid(&r.try_get::<String, _>("sender").map_err(db)?)?,
        sender_device: u32::try_from(r.try_get::<i64, _>("sender_device").map_err(db)?).unwrap_or(0),
        direction: from_json::<MessageDirection>(&direction, "message direction")?,
        body: r.try_get("body").map_err(db)?,
        sent_at: u(r.try_get("sent_at").map_err(db)?),
        received_at: u(r.try_get("received_at").map_err(db)?),
        lamport: u(r.try_get("lamport").map_err(db)?),
        group_seq: u(r.try_get("group_seq").map_err(db)?),
        kind: from_json::<MessageKind>(&r.try_get::<String, _>("kind").map_err(db)?, "message kind")?,
        status: from_json::<MessageStatus>(&status, "message status")?,
        local_seq: u(r.try_get("local_seq").map_err(db)?),
    })
}

fn outbox_from_row(r: &SqliteRow) -> Result<OutboxRow, StoreError> {
    let id: Vec<u8> = r.try_get("message_id").map_err(db)?;
    let kind: String = r.try_get("kind").map_err(db)?;
    Ok(OutboxRow {
        seq: u(r.try_get("seq").map_err(db)?),
        message_id: MessageId::from_slice(&id).ok_or_else(|| corrupt("outbox message id"))?,
        conversation: conversation(&r.try_get::<String, _>("conversation").map_err(db)?)?,
        kind: from_json::<OutboxKind>(&kind, "outbox kind")?,
        content: r.try_get("content").map_err(db)?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts").map_err(db)?).unwrap_or(u32::MAX),
        not_before: u(r.try_get("not_before").map_err(db)?),
        failed: r.try_get("failed").map_err(db)?,
        last_error: r.try_get("last_error").map_err(db)?,
    })
}

fn contact_from_row(r: &SqliteRow) -> Result<ContactRow, StoreError> {
    let trust: String = r.try_get("trust").map_err(db)?;
    Ok(ContactRow {
        account_id: uuid(&r.try_get::<String, _>("account").map_err(db)?)?,
        username: r.try_get("username").map_err(db)?,
        trust: from_json::<TrustState>(&trust, "trust state")?,
    })
}

async fn exec(conn: &mut SqliteConnection, q: SqlQuery<'_>) -> Result<(), StoreError> {
    q.execute(conn).await.map_err(db).map(|_| ())
}

async fn apply_signal(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), StoreError> {
    for ((name, device), record) in &batch.sessions {
        let q = match record {
            Some(r) => sqlx::query("INSERT OR REPLACE INTO sessions (name, device, record) VALUES (?, ?, ?)")
                .bind(name)
                .bind(i64::from(*device))
                .bind(r),
            None => {
                sqlx::query("DELETE FROM sessions WHERE name = ? AND device = ?").bind(name).bind(i64::from(*device))
            }
        };
        exec(conn, q).await?;
    }
    for (name, key) in &batch.identities {
        exec(conn, sqlx::query("INSERT OR REPLACE INTO identities (name, key) VALUES (?, ?)").bind(name).bind(key))
            .await?;
    }
    for (id, record) in &batch.pre_keys {
        let q = match record {
            Some(r) => {
                sqlx::query("INSERT OR REPLACE INTO pre_keys (id, record) VALUES (?, ?)").bind(i64::from(*id)).bind(r)
            }
            None => sqlx::query("DELETE FROM pre_keys WHERE id = ?").bind(i64::from(*id)),
        };
        exec(conn, q).await?;
    }
    for (id, r) in &batch.signed_pre_keys {
        let q = match r {
            Some(r) => sqlx::query("INSERT OR REPLACE INTO signed_pre_keys (id, record) VALUES (?, ?)")
                .bind(i64::from(*id))
                .bind(r),
            None => sqlx::query("DELETE FROM signed_pre_keys WHERE id = ?").bind(i64::from(*id)),
        };
        exec(conn, q).await?;
    }
    for (id, row) in &batch.kyber_pre_keys {
        let q = match row {
            Some(k) => sqlx::query("INSERT OR REPLACE INTO kyber_pre_keys (id, record, last_resort) VALUES (?, ?, ?)")
                .bind(i64::from(*id))
                .bind(&k.record)
                .bind(k.last_resort),
            None => sqlx::query("DELETE FROM kyber_pre_keys WHERE id = ?").bind(i64::from(*id)),
        };
        exec(conn, q).await?;
    }
    for (kid, sid, base) in &batch.kyber_used {
        let q = sqlx::query("INSERT OR IGNORE INTO kyber_used (kyber_id, signed_id, base_key) VALUES (?, ?, ?)")
            .bind(i64::from(*kid))
            .bind(i64::from(*sid))
            .bind(base);
        exec(conn, q).await?;
    }
    for (((name, device), dist), record) in &batch.sender_keys {
        let q = match record {
            Some(record) => sqlx::query(
                "INSERT OR REPLACE INTO sender_keys (name, device, distribution, record) VALUES (?, ?, ?, ?)",
            )
            .bind(name)
            .bind(i64::from(*device))
            .bind(dist.to_string())
            .bind(record),
            None => sqlx::query("DELETE FROM sender_keys WHERE name = ? AND device = ? AND distribution = ?")
                .bind(name)
                .bind(i64::from(*device))
                .bind(dist.to_string()),
        };
        exec(conn, q).await?;
    }
    Ok(())
}

async fn apply_app(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), StoreError> {
    if let Some(a) = &batch.account {
        let q = sqlx::query("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)")
            .bind(ACCOUNT_KEY)
            .bind(json(a)?.into_bytes());
        exec(conn, q).await?;
    }
    for c in &batch.contacts {
        let q = sqlx::query("INSERT OR REPLACE INTO contacts (account, username, trust) VALUES (?, ?, ?)")
            .bind(c.account_id.to_string())
            .bind(&c.username)
            .bind(json(&c.trust)?);
        exec(conn, q).await?;
    }
    for m in &batch.messages {
        let q = sqlx::query(
            "INSERT OR IGNORE INTO messages (id, conversation, sender, sender_device, direction, body, sent_at, \
             received_at, lamport, group_seq, kind, status, local_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
             max(COALESCE((SELECT MAX(local_seq) FROM messages), 0), \
                 COALESCE((SELECT local_seq FROM message_seq_floor), 0)) + 1)",
        )
        .bind(m.id.0.to_vec())
        .bind(m.conversation.to_string())
        .bind(m.sender.to_string())
        .bind(i64::from(m.sender_device))
        .bind(json(&m.direction)?)
        .bind(&m.body)
        .bind(i(m.sent_at))
        .bind(i(m.received_at))
        .bind(i(m.lamport))
        .bind(i(m.group_seq))
        .bind(json(&m.kind)?)
        .bind(json(&m.status)?);
        exec(conn, q).await?;
    }
    for id in &batch.messages_remove {
        exec(conn, sqlx::query("DELETE FROM messages WHERE id = ?").bind(id.0.to_vec())).await?;
    }
    for (id, seq) in &batch.message_group_seq {
        let q = sqlx::query("UPDATE messages SET group_seq = ? WHERE id = ?").bind(i(*seq)).bind(id.0.to_vec());
        exec(conn, q).await?;
    }
    for (id, status) in &batch.message_status {
        let row = sqlx::query("SELECT status FROM messages WHERE id = ?")
            .bind(id.0.to_vec())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        if let Some(row) = row {
            let old: MessageStatus = from_json(&row.try_get::<String, _>(0).map_err(db)?, "message status")?;
            let new = super::next_status(&old, status);
            let q = sqlx::query("UPDATE messages SET status = ? WHERE id = ?").bind(json(&new)?).bind(id.0.to_vec());
            exec(conn, q).await?;
        }
    }
    for seq in &batch.processed_envelopes {
        exec(conn, sqlx::query("INSERT OR IGNORE INTO processed_envelopes (seq) VALUES (?)").bind(i(*seq))).await?;
    }
    if !batch.processed_envelopes.is_empty() {
        let q =
            sqlx::query("DELETE FROM processed_envelopes WHERE seq <= (SELECT MAX(seq) FROM processed_envelopes) - ?")
                .bind(i(PROCESSED_ENVELOPE_WINDOW));
        exec(conn, q).await?;
    }
    apply_processed_group_seqs(conn, batch).await?;
    for (conversation, clock) in &batch.clocks {
        let q = sqlx::query(
            "INSERT INTO clocks (conversation, clock) VALUES (?, ?) \
             ON CONFLICT (conversation) DO UPDATE SET clock = max(clock, excluded.clock)",
        )
        .bind(conversation.to_string())
        .bind(i(*clock));
        exec(conn, q).await?;
    }
    apply_outbox(conn, batch).await?;
    apply_groups(conn, batch).await?;
    for (key, value) in &batch.values {
        let q = match value {
            Some(v) => sqlx::query("INSERT OR REPLACE INTO named_values (key, value) VALUES (?, ?)").bind(key).bind(v),
            None => sqlx::query("DELETE FROM named_values WHERE key = ?").bind(key),
        };
        exec(conn, q).await?;
    }
    Ok(())
}

async fn apply_outbox(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), StoreError> {
    for o in &batch.outbox_add {
        let q = sqlx::query(
            "INSERT INTO outbox (message_id, conversation, kind, content, attempts, not_before, failed) \
             VALUES (?, ?, ?, ?, 0, 0, NULL)",
        )
        .bind(o.message_id.0.to_vec())
        .bind(o.conversation.to_string())
        .bind(json(&o.kind)?)
        .bind(&o.content);
        exec(conn, q).await?;
    }
    for o in &batch.outbox_update {
        let q = sqlx::query("UPDATE outbox SET attempts = ?, not_before = ?, failed = ?, last_error = ? WHERE seq = ?")
            .bind(i64::from(o.attempts))
            .bind(i(o.not_before))
            .bind(&o.failed)
            .bind(&o.last_error)
            .bind(i(o.seq));
        exec(conn, q).await?;
    }
    for seq in &batch.outbox_remove {
        exec(conn, sqlx::query("DELETE FROM outbox WHERE seq = ?").bind(i(*seq))).await?;
    }
    apply_sent_log(conn, batch).await
}

async fn apply_sent_log(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), StoreError> {
    for r in &batch.sent_log {
        let q = sqlx::query(
            "INSERT OR REPLACE INTO sent_log (name, device, timestamp, peer, message_id, content, sent_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.address.0)
        .bind(i64::from(r.address.1))
        .bind(i(r.timestamp))
        .bind(r.peer.to_string())
        .bind(r.message_id.0.to_vec())
        .bind(&r.content)
        .bind(i(r.sent_at));
        exec(conn, q).await?;
    }
    if !batch.sent_log.is_empty() {
        let keep = i64::try_from(SENT_LOG_CAPACITY).unwrap_or(i64::MAX);
        let q = sqlx::query("DELETE FROM sent_log WHERE id NOT IN (SELECT id FROM sent_log ORDER BY id DESC LIMIT ?)")
            .bind(keep);
        exec(conn, q).await?;
    }
    for ((name, device), timestamp) in &batch.sent_log_remove {
        let q = sqlx::query("DELETE FROM sent_log WHERE name = ? AND device = ? AND timestamp = ?")
            .bind(name)
            .bind(i64::from(*device))
            .bind(i(*timestamp));
        exec(conn, q).await?;
    }
    Ok(())
}

/// Records processed group envelopes, then forgets those of the same groups that fell more
/// than [`PROCESSED_GROUP_SEQ_WINDOW`] below their group's newest.
async fn apply_processed_group_seqs(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), StoreError> {
    for (group, seq) in &batch.processed_group_seqs {
        let q = sqlx::query("INSERT OR IGNORE INTO processed_group_seqs (group_id, group_seq) VALUES (?, ?)")
            .bind(group.to_string())
            .bind(i(*seq));
        exec(conn, q).await?;
    }
    let touched: std::collections::BTreeSet<Uuid> = batch.processed_group_seqs.iter().map(|(g, _)| *g).collect();
    for group in touched {
        let q = sqlx::query(
            "DELETE FROM processed_group_seqs WHERE group_id = ?1 AND group_seq <= \
             (SELECT MAX(group_seq) FROM processed_group_seqs WHERE group_id = ?1) - ?2",
        )
        .bind(group.to_string())
        .bind(i(PROCESSED_GROUP_SEQ_WINDOW));
        exec(conn, q).await?;
    }
    Ok(())
}

async fn apply_groups(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), StoreError> {
    for (id, group) in &batch.groups {
        let q = match group {
            Some(g) => sqlx::query("INSERT OR REPLACE INTO groups (id, record) VALUES (?, ?)")
                .bind(id.to_string())
                .bind(json(g)?),
            None => sqlx::query("DELETE FROM groups WHERE id = ?").bind(id.to_string()),
        };
        exec(conn, q).await?;
    }
    for b in &batch.distributions {
        let q = sqlx::query(
            "INSERT OR IGNORE INTO distributions (group_id, distribution, account, device) VALUES (?, ?, ?, ?)",
        )
        .bind(b.group.to_string())
        .bind(b.distribution.to_string())
        .bind(b.account.to_string())
        .bind(i64::from(b.device));
        exec(conn, q).await?;
    }
    for h in &batch.held_add {
        let q = sqlx::query(
            "INSERT OR IGNORE INTO held_group_messages (group_id, group_seq, server_timestamp, content) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(h.group.to_string())
        .bind(i(h.group_seq))
        .bind(i(h.server_timestamp))
        .bind(&h.content);
        exec(conn, q).await?;
    }
    for (group, seq) in &batch.held_remove {
        let q = sqlx::query("DELETE FROM held_group_messages WHERE group_id = ? AND group_seq = ?")
            .bind(group.to_string())
            .bind(i(*seq));
        exec(conn, q).await?;
    }
    Ok(())
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        apply_signal(&mut tx, &batch).await?;
        apply_app(&mut tx, &batch).await?;
        tx.commit().await.map_err(db)
    }

    async fn account(&self) -> Result<Option<LocalAccount>, StoreError> {
        let raw = self.blob("SELECT value FROM kv WHERE key = ?", |q| q.bind(ACCOUNT_KEY)).await?;
        raw.map(|b| serde_json::from_slice(&b).map_err(|_| corrupt("account"))).transpose()
    }

    async fn session(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        self.blob("SELECT record FROM sessions WHERE name = ? AND device = ?", |q| {
            q.bind(address.0.clone()).bind(i64::from(address.1))
        })
        .await
    }

    async fn session_devices(&self, name: &str) -> Result<Vec<u32>, StoreError> {
        let rows = sqlx::query("SELECT device FROM sessions WHERE name = ? ORDER BY device")
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|r| r.try_get::<i64, _>(0).map_err(db).map(|d| u32::try_from(d).unwrap_or(0))).collect()
    }

    async fn identity(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.blob("SELECT key FROM identities WHERE name = ?", |q| q.bind(name.to_owned())).await
    }

    async fn pre_key(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.blob("SELECT record FROM pre_keys WHERE id = ?", |q| q.bind(i64::from(id))).await
    }

    async fn signed_pre_key(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.blob("SELECT record FROM signed_pre_keys WHERE id = ?", |q| q.bind(i64::from(id))).await
    }

    async fn kyber_pre_key(&self, id: u32) -> Result<Option<KyberRow>, StoreError> {
        let row = sqlx::query("SELECT record, last_resort FROM kyber_pre_keys WHERE id = ?")
            .bind(i64::from(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| Ok(KyberRow { record: r.try_get(0).map_err(db)?, last_resort: r.try_get(1).map_err(db)? }))
            .transpose()
    }

    async fn kyber_used(&self, kyber_id: u32, signed_id: u32, base_key: &[u8]) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM kyber_used WHERE kyber_id = ? AND signed_id = ? AND base_key = ?")
            .bind(i64::from(kyber_id))
            .bind(i64::from(signed_id))
            .bind(base_key.to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn sender_key(&self, sender: &Address, distribution: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        self.blob("SELECT record FROM sender_keys WHERE name = ? AND device = ? AND distribution = ?", |q| {
            q.bind(sender.0.clone()).bind(i64::from(sender.1)).bind(distribution.to_string())
        })
        .await
    }

    async fn contact(&self, account: Uuid) -> Result<Option<ContactRow>, StoreError> {
        let row = sqlx::query("SELECT account, username, trust FROM contacts WHERE account = ?")
            .bind(account.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(contact_from_row).transpose()
    }

    async fn contact_by_username(&self, username: &str) -> Result<Option<ContactRow>, StoreError> {
        let row = sqlx::query("SELECT account, username, trust FROM contacts WHERE username = ? LIMIT 1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(contact_from_row).transpose()
    }

    async fn contacts(&self) -> Result<Vec<ContactRow>, StoreError> {
        let rows = sqlx::query("SELECT account, username, trust FROM contacts ORDER BY username")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(contact_from_row).collect()
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM messages WHERE id = ?")
            .bind(id.0.to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(message_from_row).transpose()
    }

    async fn messages(&self, conversation: ConversationId, limit: usize) -> Result<Vec<MessageRow>, StoreError> {
        let sql = match conversation {
            ConversationId::Direct(_) => {
                "SELECT * FROM (SELECT * FROM messages WHERE conversation = ? \
                 ORDER BY lamport DESC, sender DESC, sender_device DESC, id DESC LIMIT ?) \
                 ORDER BY lamport, sender, sender_device, id"
            }
            ConversationId::Group(_) => {
                "SELECT * FROM (SELECT * FROM messages WHERE conversation = ? \
                 ORDER BY group_seq = 0 DESC, group_seq DESC, local_seq DESC LIMIT ?) \
                 ORDER BY group_seq = 0, group_seq, local_seq"
            }
        };
        let rows = sqlx::query(sql)
            .bind(conversation.to_string())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(message_from_row).collect()
    }

    async fn messages_after(&self, after: u64, limit: usize) -> Result<Vec<MessageRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM messages WHERE local_seq > ? ORDER BY local_seq LIMIT ?")
            .bind(i(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(message_from_row).collect()
    }

    async fn envelope_processed(&self, seq: u64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM processed_envelopes WHERE seq = ?")
            .bind(i(seq))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn group_seq_processed(&self, group: Uuid, group_seq: u64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM processed_group_seqs WHERE group_id = ? AND group_seq = ?")
            .bind(group.to_string())
            .bind(i(group_seq))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn clock(&self, conversation: ConversationId) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT clock FROM clocks WHERE conversation = ?")
            .bind(conversation.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.try_get::<i64, _>(0).map(u)).transpose().map_err(db)?.unwrap_or(0))
    }

    async fn outbox_head(&self) -> Result<Option<OutboxRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM outbox WHERE failed IS NULL ORDER BY seq LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE failed IS NULL ORDER BY seq LIMIT ?")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_all(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM outbox ORDER BY seq LIMIT ?")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_by_message(&self, id: MessageId) -> Result<Option<OutboxRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM outbox WHERE message_id = ? ORDER BY seq LIMIT 1")
            .bind(id.0.to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(outbox_from_row).transpose()
    }

    async fn outbox_counts(&self) -> Result<(u64, u64), StoreError> {
        let row =
            sqlx::query("SELECT COALESCE(SUM(failed IS NULL), 0), COALESCE(SUM(failed IS NOT NULL), 0) FROM outbox")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok((u(row.try_get(0).map_err(db)?), u(row.try_get(1).map_err(db)?)))
    }

    async fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.blob("SELECT value FROM named_values WHERE key = ?", |q| q.bind(key.to_owned())).await
    }

    async fn sent_log(&self, address: &Address, timestamp: u64) -> Result<Option<SentLogRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM sent_log WHERE name = ? AND device = ? AND timestamp = ?")
            .bind(&address.0)
            .bind(i64::from(address.1))
            .bind(i(timestamp))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(r) = row else { return Ok(None) };
        let id: Vec<u8> = r.try_get("message_id").map_err(db)?;
        Ok(Some(SentLogRow {
            address: address.clone(),
            timestamp,
            peer: uuid(&r.try_get::<String, _>("peer").map_err(db)?)?,
            message_id: MessageId::from_slice(&id).ok_or_else(|| corrupt("sent log message id"))?,
            content: r.try_get("content").map_err(db)?,
            sent_at: u(r.try_get("sent_at").map_err(db)?),
        }))
    }

    async fn group(&self, id: Uuid) -> Result<Option<GroupRow>, StoreError> {
        let raw: Option<String> = sqlx::query_scalar("SELECT record FROM groups WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        raw.map(|r| from_json(&r, "group")).transpose()
    }

    async fn groups(&self) -> Result<Vec<GroupRow>, StoreError> {
        let raw: Vec<String> =
            sqlx::query_scalar("SELECT record FROM groups ORDER BY id").fetch_all(&self.pool).await.map_err(db)?;
        raw.iter().map(|r| from_json(r, "group")).collect()
    }

    async fn distribution(&self, group: Uuid, distribution: Uuid) -> Result<Option<(Uuid, u32)>, StoreError> {
        let row = sqlx::query("SELECT account, device FROM distributions WHERE group_id = ? AND distribution = ?")
            .bind(group.to_string())
            .bind(distribution.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(r) = row else { return Ok(None) };
        let account = uuid(&r.try_get::<String, _>(0).map_err(db)?)?;
        Ok(Some((account, u32::try_from(r.try_get::<i64, _>(1).map_err(db)?).unwrap_or(0))))
    }

    async fn held(&self, group: Uuid) -> Result<Vec<HeldRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT group_seq, server_timestamp, content FROM held_group_messages WHERE group_id = ? ORDER BY group_seq",
        )
        .bind(group.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(HeldRow {
                    group,
                    group_seq: u(r.try_get(0).map_err(db)?),
                    server_timestamp: u(r.try_get(1).map_err(db)?),
                    content: r.try_get(2).map_err(db)?,
                })
            })
            .collect()
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchRow>, StoreError> {
        search::search(&self.pool, query).await
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance_tests!(async {
        crate::store::SqliteStore::in_memory()
            .await
            .unwrap_or_else(|e| panic!("cannot open an in-memory database: {e}"))
    });

    #[tokio::test]
    async fn a_file_store_keeps_commits_across_reopen() {
        use super::*;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("client.db");
        let store = SqliteStore::open(&path).await.unwrap_or_else(|e| panic!("{e}"));
        let mut batch = Batch::default();
        batch.processed_envelopes.push(7);
        store.commit(batch).await.unwrap_or_else(|e| panic!("{e}"));
        store.close().await;
        let again = SqliteStore::open(&path).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(again.envelope_processed(7).await.unwrap_or_else(|e| panic!("{e}")));
    }
}
