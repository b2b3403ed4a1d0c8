//! [`MailboxStore`] on Postgres: the send path's writes, mailbox reads, acks, expiry.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{
    EXPIRE_CHUNK, GONE_COLUMNS, PostgresStore, backend, corrupt, get, gone_from_row, load_distributions, load_groups,
    load_sets, lock_devices, lower_counts, seen_keys, streams, to_i64, to_u64, write_plan,
};
use crate::store::plan::{self, CheckMode, batch_accounts, batch_groups, batch_key_hashes};
use crate::store::{
    DeviceKey, GroupPosition, MailboxId, MailboxRead, MailboxStore, RecipientBatch, SendOutcome, SendRejection,
    StoreError, StoredEnvelope, StreamAck, StreamCursor, StreamRead, Write,
};

/// The columns of a mailbox read: a group reference takes its payload from `group_messages`.
const ENVELOPE_COLUMNS: &str = "e.seq, e.server_ts, e.kind, COALESCE(m.content, e.content) AS content, \
     e.group_id::text AS group_id, e.group_seq";
const ENVELOPE_JOIN: &str = "envelopes e LEFT JOIN group_messages m ON m.group_id = e.group_id AND m.seq = e.group_seq";

fn envelope_from_row(r: &PgRow) -> Result<StoredEnvelope, StoreError> {
    let group = match (get::<Option<String>>(r, "group_id")?, get::<Option<i64>>(r, "group_seq")?) {
        (Some(id), Some(seq)) => {
            Some(GroupPosition { group: Uuid::parse_str(&id).map_err(backend)?, seq: to_u64(seq) })
        }
        _ => None,
    };
    Ok(StoredEnvelope {
        seq: to_u64(get(r, "seq")?),
        server_ts: to_u64(get(r, "server_ts")?),
        kind: get(r, "kind")?,
        content: Bytes::from(get::<Vec<u8>>(r, "content")?),
        group,
    })
}

#[async_trait]
impl MailboxStore for PostgresStore {
    async fn check_devices(
        &self,
        sender: DeviceKey,
        recipients: &[RecipientBatch],
    ) -> Result<Result<Vec<DeviceKey>, SendRejection>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let accounts: Vec<Uuid> = recipients.iter().map(|r| r.account).collect();
        let sets = load_sets(&mut conn, &accounts, false).await?;
        let checked = sets.check(sender, recipients, CheckMode::ONLINE_ONLY);
        Ok(checked.map(|targets| targets.into_iter().map(|(k, _, _)| k).collect()))
    }

    async fn commit(&self, writes: &[Write], max_mailbox: u64) -> Result<Vec<SendOutcome>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Lock order: the groups written to, then every device row the batch may touch (in pk
        // order), before any write.
        let mut groups = load_groups(&mut tx, &batch_groups(writes)).await?;
        let mut sets = load_sets(&mut tx, &batch_accounts(writes, &groups), true).await?;
        load_distributions(&mut tx, &mut groups, &plan::group_senders(writes, &sets)).await?;
        let seen = seen_keys(&mut tx, &batch_key_hashes(writes)).await?;
        let plan = plan::plan(&mut sets, &mut groups, writes, max_mailbox, &seen);
        write_plan(&mut tx, &plan).await?;
        tx.commit().await.map_err(backend)?;
        Ok(plan.outcomes)
    }

    async fn stored_answer(&self, write: &Write) -> Result<Option<(u64, Option<u64>)>, StoreError> {
        let Some(hash) = plan::key_hash(write) else { return Ok(None) };
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let seen = seen_keys(&mut conn, &[hash]).await?;
        Ok(seen.get(&hash).map(|&(server_ts, group_seq)| (server_ts, (group_seq > 0).then_some(group_seq))))
    }

    async fn fetch(&self, mailbox: MailboxId, after_seq: u64, limit: u32) -> Result<Vec<StoredEnvelope>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENVELOPE_COLUMNS} FROM {ENVELOPE_JOIN} WHERE e.device_pk = $1 AND e.seq > $2 \
                 ORDER BY e.seq LIMIT $3"
        ))
        .bind(mailbox.0)
        .bind(to_i64(after_seq))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(envelope_from_row).collect()
    }

    async fn fetch_many(&self, reads: &[MailboxRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let pks: Vec<i64> = reads.iter().map(|r| r.mailbox.0).collect();
        let afters: Vec<i64> = reads.iter().map(|r| to_i64(r.after_seq)).collect();
        let limits: Vec<i64> = reads.iter().map(|r| i64::from(r.limit)).collect();
        let rows = sqlx::query(&format!(
            "SELECT w.i, x.* \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS w(pk, after_seq, lim, i) \
                 CROSS JOIN LATERAL (SELECT {ENVELOPE_COLUMNS} FROM {ENVELOPE_JOIN} \
                     WHERE e.device_pk = w.pk AND e.seq > w.after_seq ORDER BY e.seq LIMIT w.lim) x \
                 ORDER BY w.i, x.seq"
        ))
        .bind(pks)
        .bind(afters)
        .bind(limits)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut out = vec![Vec::new(); reads.len()];
        for r in &rows {
            // WITH ORDINALITY counts from 1.
            let i = usize::try_from(get::<i64>(r, "i")? - 1).map_err(|_| corrupt("read index"))?;
            let Some(list) = out.get_mut(i) else { continue };
            list.push(envelope_from_row(r)?);
        }
        Ok(out)
    }

    async fn ack(&self, acks: &[(MailboxId, Vec<u64>)]) -> Result<u64, StoreError> {
        let mut by_mailbox: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (mailbox, seqs) in acks {
            by_mailbox.entry(mailbox.0).or_default().extend(seqs.iter().map(|&s| to_i64(s)));
        }
        let (mut pks, mut seqs) = (Vec::new(), Vec::new());
        for (pk, mut list) in by_mailbox {
            list.sort_unstable();
            list.dedup();
            pks.extend(std::iter::repeat_n(pk, list.len()));
            seqs.extend(list);
        }
        if pks.is_empty() {
            return Ok(0);
        }
        let mut locked = pks.clone();
        locked.dedup();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        unsynced(&mut tx).await?;
        lock_devices(&mut tx, &locked).await?;
        let rows = sqlx::query(
            "DELETE FROM envelopes e USING UNNEST($1::bigint[], $2::bigint[]) AS a(pk, seq) \
             WHERE e.device_pk = a.pk AND e.seq = a.seq \
             RETURNING e.device_pk, e.group_id::text AS group_id, e.group_seq",
        )
        .bind(&pks)
        .bind(&seqs)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let gone = rows.iter().map(gone_from_row).collect::<Result<Vec<_>, _>>()?;
        lower_counts(&mut tx, &gone).await?;
        tx.commit().await.map_err(backend)?;
        Ok(gone.len() as u64)
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        let now = to_i64(now_ms);
        let mailboxes: Vec<i64> =
            sqlx::query_scalar("SELECT DISTINCT device_pk FROM envelopes WHERE expires_at <= $1 ORDER BY device_pk")
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        let sql =
            format!("DELETE FROM envelopes WHERE device_pk = ANY($1) AND expires_at <= $2 RETURNING {GONE_COLUMNS}");
        let mut total = 0;
        for chunk in mailboxes.chunks(EXPIRE_CHUNK) {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            lock_devices(&mut tx, chunk).await?;
            let rows = sqlx::query(&sql).bind(chunk).bind(now).fetch_all(&mut *tx).await.map_err(backend)?;
            let gone = rows.iter().map(gone_from_row).collect::<Result<Vec<_>, _>>()?;
            lower_counts(&mut tx, &gone).await?;
            tx.commit().await.map_err(backend)?;
            total += gone.len() as u64;
        }
        for table in ["group_messages", "send_keys"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= $1"))
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        }
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        streams::expire(&mut conn).await?;
        Ok(total)
    }

    async fn stream_cursors(&self, mailboxes: &[MailboxId]) -> Result<Vec<Vec<StreamCursor>>, StoreError> {
        streams::cursors(&self.pool, mailboxes).await
    }

    async fn fetch_streams(&self, reads: &[StreamRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
        streams::fetch(&self.pool, reads).await
    }

    async fn ack_streams(&self, acks: &[StreamAck]) -> Result<(), StoreError> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        unsynced(&mut tx).await?;
        streams::ack(&mut tx, acks).await?;
        tx.commit().await.map_err(backend)
    }

    async fn envelope_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(mailbox_count), 0)::bigint FROM devices")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(to_u64(n))
    }

    async fn group_message_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM group_messages").fetch_one(&self.pool).await.map_err(backend)?;
        Ok(to_u64(n))
    }
}

/// Makes this transaction's commit not wait for its WAL flush (`synchronous_commit = off`
/// for it alone), for acks: a server crash may undo the latest of them (their envelopes are
/// then delivered again, which the delivery contract allows), and the next synchronous
/// commit (every send's) flushes them with it.
async fn unsynced(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("SET LOCAL synchronous_commit = off").execute(tx).await.map_err(backend)?;
    Ok(())
}
