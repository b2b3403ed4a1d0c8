//! Group streams on SQLite: the cursors of member devices in stream-read groups, reading
//! and acknowledging their streams, and moving unread stream messages into mailboxes when a
//! group falls to the fan-out-on-write size.

use std::collections::BTreeSet;

use bytes::Bytes;
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{backend, number_array, to_i64, to_u64, uuid_from};
use crate::store::group_plan::{CursorPlan, UnreadRow};
use crate::store::{GroupPosition, MailboxId, StoreError, StoredEnvelope, StreamAck, StreamCursor, StreamRead};

/// Writes the cursors a roster change of a stream-read group starts and stops.
pub(super) async fn write_cursors(conn: &mut SqliteConnection, cursors: &CursorPlan) -> Result<(), StoreError> {
    let id = cursors.group.as_bytes().as_slice();
    let start_at = to_i64(cursors.seq.saturating_sub(1));
    if !cursors.start.is_empty() {
        let rows: Vec<String> = cursors
            .start
            .iter()
            .map(|(pk, until)| format!("[{pk},{}]", until.map_or("null".to_owned(), |u| u.to_string())))
            .collect();
        sqlx::query(
            "INSERT INTO group_cursors (device_pk, group_id, acked_seq, until_seq) \
             SELECT j.value ->> 0, ?2, ?3, j.value ->> 1 FROM json_each(?1) AS j WHERE true \
             ON CONFLICT (device_pk, group_id) DO UPDATE SET acked_seq = excluded.acked_seq, \
             until_seq = excluded.until_seq",
        )
        .bind(format!("[{}]", rows.join(",")))
        .bind(id)
        .bind(start_at)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    if !cursors.stop.is_empty() {
        sqlx::query(
            "UPDATE group_cursors SET until_seq = ?2 WHERE group_id = ?3 \
             AND device_pk IN (SELECT value FROM json_each(?1))",
        )
        .bind(number_array(&cursors.stop))
        .bind(to_i64(cursors.seq))
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Every unread message of `group` before `seq`, per reading device (by pk, then seq); the
/// group's cursors go (the group falls to the fan-out-on-write size and these move into
/// mailboxes).
pub(super) async fn take_unread(
    conn: &mut SqliteConnection,
    group: Uuid,
    seq: u64,
) -> Result<Vec<UnreadRow>, StoreError> {
    let id = group.as_bytes().as_slice();
    let rows = sqlx::query(
        "SELECT d.account_id, d.pk, m.seq, m.server_ts, m.expires_at, m.kind \
         FROM group_cursors c JOIN devices d ON d.pk = c.device_pk \
         JOIN group_messages m ON m.group_id = c.group_id AND m.seq > c.acked_seq \
         AND m.seq <= COALESCE(c.until_seq, ?2) AND m.seq < ?2 \
         WHERE c.group_id = ?1 ORDER BY d.pk, m.seq",
    )
    .bind(id)
    .bind(to_i64(seq))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query("DELETE FROM group_cursors WHERE group_id = ?").bind(id).execute(&mut *conn).await.map_err(backend)?;
    rows.iter()
        .map(|r| {
            Ok(UnreadRow {
                account: uuid_from(&r.get::<Vec<u8>, _>(0))?,
                pk: r.get(1),
                seq: to_u64(r.get(2)),
                server_ts: to_u64(r.get(3)),
                expires_at: to_u64(r.get(4)),
                kind: r.get(5),
            })
        })
        .collect()
}

/// Once a group's unread stream messages are in mailboxes: deletes its messages before
/// `seq` that no mailbox references.
pub(super) async fn drop_unreferenced(conn: &mut SqliteConnection, group: Uuid, seq: u64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM group_messages WHERE group_id = ? AND refs <= 0 AND seq < ?")
        .bind(group.as_bytes().as_slice())
        .bind(to_i64(seq))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The cursors of each mailbox's device, by group id.
pub(super) async fn cursors(pool: &SqlitePool, mailboxes: &[MailboxId]) -> Result<Vec<Vec<StreamCursor>>, StoreError> {
    let mut out = vec![Vec::new(); mailboxes.len()];
    if mailboxes.is_empty() {
        return Ok(out);
    }
    let pks: Vec<i64> = mailboxes.iter().map(|m| m.0).collect();
    let rows = sqlx::query(
        "SELECT device_pk, group_id, acked_seq, until_seq FROM group_cursors \
         WHERE device_pk IN (SELECT value FROM json_each(?1)) ORDER BY device_pk, group_id",
    )
    .bind(number_array(&pks))
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    for r in &rows {
        let pk: i64 = r.get(0);
        let cursor = StreamCursor {
            group: uuid_from(&r.get::<Vec<u8>, _>(1))?,
            acked_seq: to_u64(r.get(2)),
            until_seq: r.get::<Option<i64>, _>(3).map(to_u64),
        };
        for (i, m) in mailboxes.iter().enumerate() {
            if m.0 == pk {
                out[i].push(cursor);
            }
        }
    }
    Ok(out)
}

/// Reads group streams, one indexed range per read, in one statement.
pub(super) async fn fetch(pool: &SqlitePool, reads: &[StreamRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
    let mut out = vec![Vec::new(); reads.len()];
    if reads.is_empty() {
        return Ok(out);
    }
    let parts: Vec<String> = (0..reads.len())
        .map(|i| {
            format!(
                "SELECT * FROM (SELECT {i} AS i, seq, server_ts, kind, content FROM group_messages \
                 WHERE group_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?)"
            )
        })
        .collect();
    let sql = parts.join(" UNION ALL ");
    let mut query = sqlx::query(&sql);
    for read in reads {
        query = query
            .bind(read.group.as_bytes().to_vec())
            .bind(to_i64(read.after_seq))
            .bind(read.until_seq.map_or(i64::MAX, to_i64))
            .bind(read.limit);
    }
    let rows = query.fetch_all(pool).await.map_err(backend)?;
    for r in &rows {
        let i = usize::try_from(r.get::<i64, _>(0)).unwrap_or(usize::MAX);
        let (Some(list), Some(read)) = (out.get_mut(i), reads.get(i)) else { continue };
        list.push(StoredEnvelope {
            seq: 0,
            server_ts: to_u64(r.get(2)),
            kind: r.get(3),
            content: Bytes::from(r.get::<Vec<u8>, _>(4)),
            group: Some(GroupPosition { group: read.group, seq: to_u64(r.get(1)) }),
        });
    }
    for list in &mut out {
        list.sort_by_key(|e| e.group.map_or(0, |g| g.seq));
    }
    Ok(out)
}

/// Advances cursors, drops those that reached their end, and deletes the stream messages
/// every remaining cursor of their group is past.
pub(super) async fn ack(conn: &mut SqliteConnection, acks: &[StreamAck]) -> Result<(), StoreError> {
    if acks.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> =
        acks.iter().map(|a| format!("[{},\"{}\",{}]", a.mailbox.0, a.group.simple(), a.seq)).collect();
    let json = format!("[{}]", rows.join(","));
    sqlx::query(
        "UPDATE group_cursors SET acked_seq = MAX(acked_seq, j.value ->> 2) FROM json_each(?1) AS j \
         WHERE group_cursors.device_pk = j.value ->> 0 AND group_cursors.group_id = unhex(j.value ->> 1)",
    )
    .bind(&json)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query(
        "DELETE FROM group_cursors WHERE until_seq IS NOT NULL AND acked_seq >= until_seq \
         AND (device_pk, group_id) IN (SELECT j.value ->> 0, unhex(j.value ->> 1) FROM json_each(?1) AS j)",
    )
    .bind(&json)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    let groups: BTreeSet<Uuid> = acks.iter().map(|a| a.group).collect();
    for group in groups {
        let id = group.as_bytes().as_slice();
        sqlx::query(
            "DELETE FROM group_messages WHERE group_id = ?1 AND refs <= 0 \
             AND seq <= (SELECT MIN(acked_seq) FROM group_cursors WHERE group_id = ?1)",
        )
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Drops the cursors of departed accounts' devices whose remaining messages all expired.
pub(super) async fn expire(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM group_cursors WHERE until_seq IS NOT NULL AND NOT EXISTS (SELECT 1 FROM group_messages m \
         WHERE m.group_id = group_cursors.group_id AND m.seq > group_cursors.acked_seq \
         AND m.seq <= group_cursors.until_seq)",
    )
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}
