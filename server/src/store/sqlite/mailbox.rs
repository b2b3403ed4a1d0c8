//! [`MailboxStore`] on SQLite: the send path's writes, mailbox reads, acks, expiry.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use uuid::Uuid;

use super::{
    SqliteStore, Unsynced, backend, begin, finish, gone_from_row, load_distributions, load_groups, load_sets,
    lower_counts, seen_keys, streams, to_i64, to_u64, uuid_from, write_plan,
};
use crate::store::plan::{self, CheckMode, batch_accounts, batch_groups, batch_key_hashes};
use crate::store::{
    DeviceKey, GroupPosition, MailboxId, MailboxRead, MailboxStore, RecipientBatch, SendOutcome, SendRejection,
    StoreError, StoredEnvelope, StreamAck, StreamCursor, StreamRead, Write,
};

/// The columns of a mailbox read: a group reference takes its payload from `group_messages`.
const ENVELOPE_COLUMNS: &str = "e.seq, e.server_ts, e.kind, COALESCE(m.content, e.content) AS content, \
     e.group_id, e.group_seq";
const ENVELOPE_JOIN: &str = "envelopes e LEFT JOIN group_messages m ON m.group_id = e.group_id AND m.seq = e.group_seq";

/// An envelope from a row of [`ENVELOPE_COLUMNS`] starting at column `at`.
fn envelope_from_row(r: &sqlx::sqlite::SqliteRow, at: usize) -> Result<StoredEnvelope, StoreError> {
    let group = match (r.get::<Option<Vec<u8>>, _>(at + 4), r.get::<Option<i64>, _>(at + 5)) {
        (Some(id), Some(seq)) => Some(GroupPosition { group: uuid_from(&id)?, seq: to_u64(seq) }),
        _ => None,
    };
    Ok(StoredEnvelope {
        seq: to_u64(r.get(at)),
        server_ts: to_u64(r.get(at + 1)),
        kind: r.get(at + 2),
        content: Bytes::from(r.get::<Vec<u8>, _>(at + 3)),
        group,
    })
}

#[async_trait]
impl MailboxStore for SqliteStore {
    async fn check_devices(
        &self,
        sender: DeviceKey,
        recipients: &[RecipientBatch],
    ) -> Result<Result<Vec<DeviceKey>, SendRejection>, StoreError> {
        let mut conn = self.read.acquire().await.map_err(backend)?;
        let accounts: Vec<Uuid> = recipients.iter().map(|r| r.account).chain([sender.account]).collect();
        let sets = load_sets(&mut conn, &accounts).await?;
        let checked = sets.check(sender, recipients, CheckMode::ONLINE_ONLY);
        Ok(checked.map(|targets| targets.into_iter().map(|(k, _, _)| k).collect()))
    }

    async fn commit(&self, writes: &[Write], max_mailbox: u64) -> Result<Vec<SendOutcome>, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let mut groups = load_groups(&mut conn, &batch_groups(writes)).await?;
            let mut sets = load_sets(&mut conn, &batch_accounts(writes, &groups)).await?;
            load_distributions(&mut conn, &mut groups, &plan::group_senders(writes, &sets)).await?;
            let seen = seen_keys(&mut conn, &batch_key_hashes(writes)).await?;
            let plan = plan::plan(&mut sets, &mut groups, writes, max_mailbox, &seen);
            write_plan(&mut conn, &plan).await?;
            Ok(plan.outcomes)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn stored_answer(&self, write: &Write) -> Result<Option<(u64, Option<u64>)>, StoreError> {
        let Some(hash) = plan::key_hash(write) else { return Ok(None) };
        let mut conn = self.read.acquire().await.map_err(backend)?;
        let seen = seen_keys(&mut conn, &[hash]).await?;
        Ok(seen.get(&hash).map(|&(server_ts, group_seq)| (server_ts, (group_seq > 0).then_some(group_seq))))
    }

    async fn fetch(&self, mailbox: MailboxId, after_seq: u64, limit: u32) -> Result<Vec<StoredEnvelope>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENVELOPE_COLUMNS} FROM {ENVELOPE_JOIN} WHERE e.device_pk = ? AND e.seq > ? ORDER BY e.seq LIMIT ?"
        ))
        .bind(mailbox.0)
        .bind(to_i64(after_seq))
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        rows.iter().map(|r| envelope_from_row(r, 0)).collect()
    }

    async fn fetch_many(&self, reads: &[MailboxRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        // One indexed range read per mailbox, tagged with its position, in one statement.
        let parts: Vec<String> = (0..reads.len())
            .map(|i| {
                format!(
                    "SELECT * FROM (SELECT {i} AS i, {ENVELOPE_COLUMNS} FROM {ENVELOPE_JOIN} \
                     WHERE e.device_pk = ? AND e.seq > ? ORDER BY e.seq LIMIT ?)"
                )
            })
            .collect();
        let sql = parts.join(" UNION ALL ");
        let mut query = sqlx::query(&sql);
        for read in reads {
            query = query.bind(read.mailbox.0).bind(to_i64(read.after_seq)).bind(read.limit);
        }
        let rows = query.fetch_all(&self.read).await.map_err(backend)?;
        let mut out = vec![Vec::new(); reads.len()];
        for r in &rows {
            let i = usize::try_from(r.get::<i64, _>(0)).unwrap_or(usize::MAX);
            let Some(list) = out.get_mut(i) else { continue };
            list.push(envelope_from_row(r, 1)?);
        }
        for list in &mut out {
            list.sort_by_key(|e| e.seq);
        }
        Ok(out)
    }

    async fn ack(&self, acks: &[(MailboxId, Vec<u64>)]) -> Result<u64, StoreError> {
        let pairs: Vec<String> =
            acks.iter().flat_map(|(m, seqs)| seqs.iter().map(move |seq| format!("[{},{seq}]", m.0))).collect();
        if pairs.is_empty() {
            return Ok(0);
        }
        let mut tx = Unsynced::begin(&self.write).await?;
        let conn = &mut tx.conn;
        let result = async {
            let rows = sqlx::query(
                "DELETE FROM envelopes WHERE (device_pk, seq) IN \
                 (SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?1) AS j) \
                 RETURNING device_pk, group_id, group_seq",
            )
            .bind(format!("[{}]", pairs.join(",")))
            .fetch_all(&mut **conn)
            .await
            .map_err(backend)?;
            let gone = rows.iter().map(gone_from_row).collect::<Result<Vec<_>, _>>()?;
            lower_counts(conn, &gone).await?;
            Ok(gone.len() as u64)
        }
        .await;
        tx.finish(result).await
    }

    async fn stream_cursors(&self, mailboxes: &[MailboxId]) -> Result<Vec<Vec<StreamCursor>>, StoreError> {
        streams::cursors(&self.read, mailboxes).await
    }

    async fn fetch_streams(&self, reads: &[StreamRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
        streams::fetch(&self.read, reads).await
    }

    async fn ack_streams(&self, acks: &[StreamAck]) -> Result<(), StoreError> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut tx = Unsynced::begin(&self.write).await?;
        let result = streams::ack(&mut tx.conn, acks).await;
        tx.finish(result).await
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let rows =
                sqlx::query("DELETE FROM envelopes WHERE expires_at <= ? RETURNING device_pk, group_id, group_seq")
                    .bind(to_i64(now_ms))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(backend)?;
            let gone = rows.iter().map(gone_from_row).collect::<Result<Vec<_>, _>>()?;
            lower_counts(&mut conn, &gone).await?;
            for table in ["group_messages", "send_keys"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= ?"))
                    .bind(to_i64(now_ms))
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
            }
            streams::expire(&mut conn).await?;
            Ok(gone.len() as u64)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn envelope_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(mailbox_count), 0) FROM devices")
            .fetch_one(&self.read)
            .await
            .map_err(backend)?;
        Ok(to_u64(n))
    }

    async fn group_message_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM group_messages").fetch_one(&self.read).await.map_err(backend)?;
        Ok(to_u64(n))
    }
}
