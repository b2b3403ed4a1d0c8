//! Group streams on Postgres: the cursors of member devices in stream-read groups, reading
//! and acknowledging their streams, and moving unread stream messages into mailboxes when a
//! group falls to the fan-out-on-write size. Lock order as in the schema: a roster change
//! holds its group row, then takes cursor rows before message rows, as acks do.

use std::collections::BTreeSet;

use bytes::Bytes;
use sqlx::PgPool;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::{backend, get, get_uuid, to_i64, to_u64};
use crate::store::group_plan::{CursorPlan, UnreadRow};
use crate::store::{GroupPosition, MailboxId, StoreError, StoredEnvelope, StreamAck, StreamCursor, StreamRead};

/// Writes the cursors a roster change of a stream-read group starts and stops.
pub(super) async fn write_cursors(conn: &mut PgConnection, cursors: &CursorPlan) -> Result<(), StoreError> {
    let id = cursors.group.to_string();
    if !cursors.start.is_empty() {
        sqlx::query(
            "INSERT INTO group_cursors (device_pk, group_id, acked_seq, until_seq) \
             SELECT u.pk, $3::uuid, $4, u.until FROM UNNEST($1::bigint[], $2::bigint[]) AS u(pk, until) \
             ON CONFLICT (device_pk, group_id) DO UPDATE SET acked_seq = EXCLUDED.acked_seq, \
             until_seq = EXCLUDED.until_seq",
        )
        .bind(cursors.start.iter().map(|(pk, _)| *pk).collect::<Vec<_>>())
        .bind(cursors.start.iter().map(|(_, until)| until.map(to_i64)).collect::<Vec<_>>())
        .bind(&id)
        .bind(to_i64(cursors.seq.saturating_sub(1)))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    if !cursors.stop.is_empty() {
        sqlx::query("UPDATE group_cursors SET until_seq = $2 WHERE group_id = $3::uuid AND device_pk = ANY($1)")
            .bind(&cursors.stop)
            .bind(to_i64(cursors.seq))
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// Every unread message of `group` before `seq`, per reading device (by pk, then seq); the
/// group's cursors go (the group falls to the fan-out-on-write size and these move into
/// mailboxes).
pub(super) async fn take_unread(conn: &mut PgConnection, group: Uuid, seq: u64) -> Result<Vec<UnreadRow>, StoreError> {
    let id = group.to_string();
    let rows = sqlx::query(
        "SELECT d.account_id::text AS account_id, d.pk, m.seq, m.server_ts, m.expires_at, m.kind \
         FROM group_cursors c JOIN devices d ON d.pk = c.device_pk \
         JOIN group_messages m ON m.group_id = c.group_id AND m.seq > c.acked_seq \
         AND m.seq <= COALESCE(c.until_seq, $2) AND m.seq < $2 \
         WHERE c.group_id = $1::uuid ORDER BY d.pk, m.seq",
    )
    .bind(&id)
    .bind(to_i64(seq))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query("DELETE FROM group_cursors WHERE group_id = $1::uuid")
        .bind(&id)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|r| {
            Ok(UnreadRow {
                account: get_uuid(r, "account_id")?,
                pk: get(r, "pk")?,
                seq: to_u64(get(r, "seq")?),
                server_ts: to_u64(get(r, "server_ts")?),
                expires_at: to_u64(get(r, "expires_at")?),
                kind: get(r, "kind")?,
            })
        })
        .collect()
}

/// Once a group's unread stream messages are in mailboxes: deletes its messages before
/// `seq` that no mailbox references.
pub(super) async fn drop_unreferenced(conn: &mut PgConnection, group: Uuid, seq: u64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM group_messages WHERE group_id = $1::uuid AND refs <= 0 AND seq < $2")
        .bind(group.to_string())
        .bind(to_i64(seq))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The cursors of each mailbox's device, by group id.
pub(super) async fn cursors(pool: &PgPool, mailboxes: &[MailboxId]) -> Result<Vec<Vec<StreamCursor>>, StoreError> {
    let mut out = vec![Vec::new(); mailboxes.len()];
    if mailboxes.is_empty() {
        return Ok(out);
    }
    let pks: Vec<i64> = mailboxes.iter().map(|m| m.0).collect();
    let rows = sqlx::query(
        "SELECT device_pk, group_id::text AS group_id, acked_seq, until_seq FROM group_cursors \
         WHERE device_pk = ANY($1) ORDER BY device_pk, group_id",
    )
    .bind(&pks)
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    for r in &rows {
        let pk: i64 = get(r, "device_pk")?;
        let cursor = StreamCursor {
            group: get_uuid(r, "group_id")?,
            acked_seq: to_u64(get(r, "acked_seq")?),
            until_seq: get::<Option<i64>>(r, "until_seq")?.map(to_u64),
        };
        for (i, m) in mailboxes.iter().enumerate() {
            if m.0 == pk {
                out[i].push(cursor);
            }
        }
    }
    Ok(out)
}

/// Reads group streams: one indexed range per read, in one statement.
pub(super) async fn fetch(pool: &PgPool, reads: &[StreamRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
    let mut out = vec![Vec::new(); reads.len()];
    if reads.is_empty() {
        return Ok(out);
    }
    let rows = sqlx::query(
        "SELECT r.i, m.seq, m.server_ts, m.kind, m.content \
         FROM UNNEST($1::text[]::uuid[], $2::bigint[], $3::bigint[], $4::bigint[]) \
         WITH ORDINALITY AS r(group_id, after_seq, until_seq, lim, i) \
         CROSS JOIN LATERAL (SELECT seq, server_ts, kind, content FROM group_messages \
         WHERE group_id = r.group_id AND seq > r.after_seq AND seq <= r.until_seq ORDER BY seq LIMIT r.lim) m",
    )
    .bind(reads.iter().map(|r| r.group.to_string()).collect::<Vec<_>>())
    .bind(reads.iter().map(|r| to_i64(r.after_seq)).collect::<Vec<_>>())
    .bind(reads.iter().map(|r| r.until_seq.map_or(i64::MAX, to_i64)).collect::<Vec<_>>())
    .bind(reads.iter().map(|r| i64::from(r.limit)).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    for r in &rows {
        let i = usize::try_from(get::<i64>(r, "i")? - 1).unwrap_or(usize::MAX);
        let (Some(list), Some(read)) = (out.get_mut(i), reads.get(i)) else { continue };
        list.push(StoredEnvelope {
            seq: 0,
            server_ts: to_u64(get(r, "server_ts")?),
            kind: get(r, "kind")?,
            content: Bytes::from(get::<Vec<u8>>(r, "content")?),
            group: Some(GroupPosition { group: read.group, seq: to_u64(get(r, "seq")?) }),
        });
    }
    for list in &mut out {
        list.sort_by_key(|e| e.group.map_or(0, |g| g.seq));
    }
    Ok(out)
}

/// Advances cursors, drops those that reached their end, and deletes the stream messages
/// every remaining cursor of their group is past (skipping rows another node is deleting).
pub(super) async fn ack(conn: &mut PgConnection, acks: &[StreamAck]) -> Result<(), StoreError> {
    if acks.is_empty() {
        return Ok(());
    }
    // One update may not touch a row twice: the highest seq per (device, group) wins.
    let mut best: std::collections::BTreeMap<(i64, Uuid), u64> = std::collections::BTreeMap::new();
    for a in acks {
        let e = best.entry((a.mailbox.0, a.group)).or_insert(0);
        *e = (*e).max(a.seq);
    }
    let pks: Vec<i64> = best.keys().map(|k| k.0).collect();
    let groups: Vec<String> = best.keys().map(|k| k.1.to_string()).collect();
    let seqs: Vec<i64> = best.values().map(|&s| to_i64(s)).collect();
    sqlx::query(
        "UPDATE group_cursors c SET acked_seq = GREATEST(c.acked_seq, u.seq) \
         FROM UNNEST($1::bigint[], $2::text[]::uuid[], $3::bigint[]) AS u(pk, group_id, seq) \
         WHERE c.device_pk = u.pk AND c.group_id = u.group_id",
    )
    .bind(&pks)
    .bind(&groups)
    .bind(&seqs)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query(
        "DELETE FROM group_cursors c USING UNNEST($1::bigint[], $2::text[]::uuid[]) AS u(pk, group_id) \
         WHERE c.device_pk = u.pk AND c.group_id = u.group_id AND c.until_seq IS NOT NULL \
         AND c.acked_seq >= c.until_seq",
    )
    .bind(&pks)
    .bind(&groups)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    let touched: BTreeSet<Uuid> = best.keys().map(|k| k.1).collect();
    for group in touched {
        sqlx::query(
            "DELETE FROM group_messages WHERE (group_id, seq) IN (SELECT group_id, seq FROM group_messages \
             WHERE group_id = $1::uuid AND refs <= 0 \
             AND seq <= (SELECT MIN(acked_seq) FROM group_cursors WHERE group_id = $1::uuid) \
             FOR UPDATE SKIP LOCKED)",
        )
        .bind(group.to_string())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Drops the cursors of departed accounts' devices whose remaining messages all expired.
pub(super) async fn expire(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM group_cursors c WHERE c.until_seq IS NOT NULL AND NOT EXISTS (SELECT 1 FROM group_messages m \
         WHERE m.group_id = c.group_id AND m.seq > c.acked_seq AND m.seq <= c.until_seq)",
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}
