//! The store on SQLite (sqlx, WAL, `synchronous=FULL`): the embedded default.
//!
//! All writes go through one connection (SQLite has one writer anyway), so a
//! write transaction never fails for lack of the write lock; reads use a pool.
//! One module per concern implements its trait: `accounts` ([`AccountStore`]),
//! `keys` ([`KeyStore`]), `mailbox` ([`MailboxStore`]), `groups` ([`GroupStore`]);
//! this one holds what they share (opening, transactions, the batch reads and writes).
//!
//! [`AccountStore`]: super::AccountStore
//! [`KeyStore`]: super::KeyStore
//! [`MailboxStore`]: super::MailboxStore
//! [`GroupStore`]: super::GroupStore

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::group_plan::{GroupState, GroupStates, refs_dropped};
use super::plan::{DeviceRow, DeviceSets, KeyHash, Plan, SeenKey};
use super::{Account, Device, DeviceKey, GroupPosition, MailboxId, StoreError};

mod accounts;
mod groups;
mod keys;
mod link;
mod mailbox;
mod push;
mod streams;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn uuid_from(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(backend)
}

/// Envelopes per multi-row INSERT (8 parameters each).
const INSERT_CHUNK: usize = 64;

/// `INSERT INTO envelopes ... VALUES (?,?,?,?,?,?,?,?), ...` for `rows` rows; the strings are
/// built once, so sqlx's statement cache sees the same SQL every time.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=INSERT_CHUNK)
            .map(|n| {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; n.max(1)].join(", ");
                format!(
                    "INSERT INTO envelopes (device_pk, seq, server_ts, expires_at, kind, content, group_id, group_seq) \
                     VALUES {values}"
                )
            })
            .collect()
    });
    &all[rows.min(INSERT_CHUNK)]
}

/// A JSON array of ids as hex strings, for `json_each` + `unhex`.
fn hex_id_array(ids: &[Uuid]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("\"{}\"", id.simple())).collect();
    format!("[{}]", quoted.join(","))
}

/// A JSON array of numbers.
fn number_array(values: &[i64]) -> String {
    let list: Vec<String> = values.iter().map(i64::to_string).collect();
    format!("[{}]", list.join(","))
}

/// SQLite-backed store.
#[derive(Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`) and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        MIGRATOR.run(&write).await.map_err(backend)?;
        let read = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(backend)?;
        Ok(SqliteStore { read, write })
    }
}

/// Reads the devices of `accounts` (and which accounts exist) in one query.
async fn load_sets(conn: &mut SqliteConnection, accounts: &[Uuid]) -> Result<DeviceSets, StoreError> {
    let rows = sqlx::query(
        "SELECT a.id, d.pk, d.device_id, d.registration_id, d.mailbox_count, d.last_seq \
         FROM accounts a LEFT JOIN devices d ON d.account_id = a.id \
         WHERE a.id IN (SELECT unhex(value) FROM json_each(?1)) ORDER BY a.id, d.device_id",
    )
    .bind(hex_id_array(accounts))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let mut sets = DeviceSets::default();
    for row in &rows {
        let account = uuid_from(&row.get::<Vec<u8>, _>(0))?;
        match row.get::<Option<i64>, _>(1) {
            None => sets.add_account(account),
            Some(pk) => sets.add_device(
                account,
                DeviceRow {
                    pk,
                    device_id: to_u32(row.get(2)),
                    registration_id: to_u32(row.get(3)),
                    mailbox_count: to_u64(row.get(4)),
                    last_seq: to_u64(row.get(5)),
                },
            ),
        }
    }
    Ok(sets)
}

/// Reads what the send path needs of `groups`: counters and members (distributions are
/// added by [`load_distributions`] once the device rows are known).
async fn load_groups(conn: &mut SqliteConnection, groups: &[Uuid]) -> Result<GroupStates, StoreError> {
    let mut states = GroupStates::new();
    if groups.is_empty() {
        return Ok(states);
    }
    let ids = hex_id_array(groups);
    let rows = sqlx::query(
        "SELECT id, epoch, seq, read_path FROM chat_groups WHERE id IN (SELECT unhex(value) FROM json_each(?1))",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for row in &rows {
        let id = uuid_from(&row.get::<Vec<u8>, _>(0))?;
        let state = GroupState {
            epoch: to_u64(row.get(1)),
            seq: to_u64(row.get(2)),
            read_path: row.get::<i64, _>(3) != 0,
            ..GroupState::default()
        };
        states.insert(id, state);
    }
    let members = sqlx::query(
        "SELECT group_id, account_id FROM group_members WHERE group_id IN (SELECT unhex(value) FROM json_each(?1))",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for row in &members {
        let group = uuid_from(&row.get::<Vec<u8>, _>(0))?;
        let account = uuid_from(&row.get::<Vec<u8>, _>(1))?;
        if let Some(state) = states.get_mut(&group) {
            state.members.push(account);
        }
    }
    Ok(states)
}

/// Adds to `states` the current-epoch distributions sent by the devices `senders`.
async fn load_distributions(
    conn: &mut SqliteConnection,
    states: &mut GroupStates,
    senders: &[i64],
) -> Result<(), StoreError> {
    if states.is_empty() || senders.is_empty() {
        return Ok(());
    }
    let groups: Vec<Uuid> = states.keys().copied().collect();
    let rows = sqlx::query(
        "SELECT d.group_id, d.sender_pk, d.recipient_pk FROM group_distributions d \
         JOIN chat_groups g ON g.id = d.group_id AND g.epoch = d.epoch \
         WHERE d.group_id IN (SELECT unhex(value) FROM json_each(?1)) \
         AND d.sender_pk IN (SELECT value FROM json_each(?2))",
    )
    .bind(hex_id_array(&groups))
    .bind(number_array(senders))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for row in &rows {
        let group = uuid_from(&row.get::<Vec<u8>, _>(0))?;
        if let Some(state) = states.get_mut(&group) {
            state.distributions.insert((row.get(1), row.get(2)));
        }
    }
    Ok(())
}

/// The idempotency keys among `hashes` that are stored, with their first answer.
async fn seen_keys(conn: &mut SqliteConnection, hashes: &[KeyHash]) -> Result<HashMap<KeyHash, SeenKey>, StoreError> {
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let list: Vec<String> = hashes.iter().map(|h| format!("\"{}\"", hex::encode(h))).collect();
    let rows = sqlx::query(
        "SELECT key_hash, server_ts, group_seq FROM send_keys \
         WHERE key_hash IN (SELECT unhex(value) FROM json_each(?1))",
    )
    .bind(format!("[{}]", list.join(",")))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let mut seen = HashMap::with_capacity(rows.len());
    for row in &rows {
        let hash: Vec<u8> = row.get(0);
        let hash: KeyHash =
            hash.try_into().map_err(|_| StoreError::Backend("stored send key is not 32 bytes".into()))?;
        seen.insert(hash, (to_u64(row.get(1)), to_u64(row.get(2))));
    }
    Ok(seen)
}

/// Writes a planned batch: the idempotency keys, the group messages (once each) and group
/// seqs, the distribution records, the mailbox counters, and the envelopes in chunks.
async fn write_plan(conn: &mut SqliteConnection, plan: &Plan) -> Result<(), StoreError> {
    if !plan.keys.is_empty() {
        let rows: Vec<String> = plan
            .keys
            .iter()
            .map(|k| format!("[\"{}\",{},{},{}]", hex::encode(k.hash), k.server_ts, k.expires_at, k.group_seq))
            .collect();
        sqlx::query(
            "INSERT INTO send_keys (key_hash, server_ts, expires_at, group_seq) \
             SELECT unhex(j.value ->> 0), j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?1) AS j",
        )
        .bind(format!("[{}]", rows.join(",")))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    for m in &plan.group_messages {
        sqlx::query(
            "INSERT INTO group_messages (group_id, seq, server_ts, expires_at, kind, content, refs) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(m.group.as_bytes().as_slice())
        .bind(to_i64(m.seq))
        .bind(to_i64(m.server_ts))
        .bind(to_i64(m.expires_at))
        .bind(m.kind)
        .bind(m.content.as_ref())
        .bind(to_i64(m.refs))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    if !plan.group_refs.is_empty() {
        let triples: Vec<String> =
            plan.group_refs.iter().map(|((g, seq), n)| format!("[\"{}\",{seq},{n}]", g.simple())).collect();
        sqlx::query(
            "UPDATE group_messages SET refs = refs + (j.value ->> 2) FROM json_each(?1) AS j \
             WHERE group_messages.group_id = unhex(j.value ->> 0) AND group_messages.seq = j.value ->> 1",
        )
        .bind(format!("[{}]", triples.join(",")))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    for (group, seq) in &plan.group_seqs {
        sqlx::query("UPDATE chat_groups SET seq = ? WHERE id = ?")
            .bind(to_i64(*seq))
            .bind(group.as_bytes().as_slice())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    for d in &plan.distributions {
        sqlx::query(
            "INSERT INTO group_distributions (group_id, sender_pk, recipient_pk, epoch) VALUES (?, ?, ?, ?) \
             ON CONFLICT (group_id, sender_pk, recipient_pk) DO UPDATE SET epoch = excluded.epoch",
        )
        .bind(d.group.as_bytes().as_slice())
        .bind(d.sender_pk)
        .bind(d.recipient_pk)
        .bind(to_i64(d.epoch))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    if plan.appends.is_empty() {
        return Ok(());
    }
    let bumped: Vec<String> = plan.bumped.iter().map(|(pk, (added, last))| format!("[{pk},{last},{added}]")).collect();
    sqlx::query(
        "UPDATE devices SET last_seq = j.value ->> 1, mailbox_count = mailbox_count + (j.value ->> 2) \
         FROM json_each(?1) AS j WHERE devices.pk = j.value ->> 0",
    )
    .bind(format!("[{}]", bumped.join(",")))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    for chunk in plan.appends.chunks(INSERT_CHUNK) {
        let mut query = sqlx::query(insert_sql(chunk.len()));
        for e in chunk {
            query = query
                .bind(e.pk)
                .bind(to_i64(e.seq))
                .bind(to_i64(e.server_ts))
                .bind(to_i64(e.expires_at))
                .bind(e.kind)
                .bind(e.content.as_ref())
                .bind(e.group.map(|g| g.group.as_bytes().to_vec()))
                .bind(e.group.map(|g| to_i64(g.seq)));
        }
        query.execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(())
}

/// One deleted envelope: its mailbox, and the group message it referenced, if any.
type Gone = (i64, Option<GroupPosition>);

fn gone_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Gone, StoreError> {
    let group = match (row.get::<Option<Vec<u8>>, _>(1), row.get::<Option<i64>, _>(2)) {
        (Some(id), Some(seq)) => Some(GroupPosition { group: uuid_from(&id)?, seq: to_u64(seq) }),
        _ => None,
    };
    Ok((row.get(0), group))
}

/// Lowers the mailbox counters for deleted envelopes, and the reference counts of the group
/// messages they referenced (deleting those left without references).
async fn lower_counts(conn: &mut SqliteConnection, gone: &[Gone]) -> Result<(), StoreError> {
    if gone.is_empty() {
        return Ok(());
    }
    let mut per_mailbox: HashMap<i64, i64> = HashMap::new();
    for (pk, _) in gone {
        *per_mailbox.entry(*pk).or_default() += 1;
    }
    let pairs: Vec<String> = per_mailbox.iter().map(|(pk, n)| format!("[{pk},{n}]")).collect();
    sqlx::query(
        "UPDATE devices SET mailbox_count = mailbox_count - (j.value ->> 1) \
         FROM json_each(?1) AS j WHERE devices.pk = j.value ->> 0",
    )
    .bind(format!("[{}]", pairs.join(",")))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    let groups: Vec<GroupPosition> = gone.iter().filter_map(|(_, g)| *g).collect();
    drop_group_refs(conn, &groups).await
}

/// Lowers the reference counts of group messages by one per entry of `refs`, and deletes the
/// messages left without references.
async fn drop_group_refs(conn: &mut SqliteConnection, refs: &[GroupPosition]) -> Result<(), StoreError> {
    if refs.is_empty() {
        return Ok(());
    }
    let triples: Vec<String> =
        refs_dropped(refs).iter().map(|((g, seq), n)| format!("[\"{}\",{seq},{n}]", g.simple())).collect();
    let json = format!("[{}]", triples.join(","));
    sqlx::query(
        "UPDATE group_messages SET refs = refs - (j.value ->> 2) FROM json_each(?1) AS j \
         WHERE group_messages.group_id = unhex(j.value ->> 0) AND group_messages.seq = j.value ->> 1",
    )
    .bind(&json)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query(
        "DELETE FROM group_messages WHERE refs <= 0 AND (group_id, seq) IN \
         (SELECT unhex(j.value ->> 0), j.value ->> 1 FROM json_each(?1) AS j)",
    )
    .bind(&json)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn account_exists(conn: &mut SqliteConnection, account: Uuid) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE id = ?")
        .bind(account.as_bytes().as_slice())
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(n > 0)
}

fn device_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Device, StoreError> {
    let account = uuid_from(&row.get::<Vec<u8>, _>("account_id"))?;
    let auth: Vec<u8> = row.get("auth_key");
    let auth_key: [u8; 32] =
        auth.try_into().map_err(|_| StoreError::Backend("stored auth key is not 32 bytes".into()))?;
    Ok(Device {
        key: DeviceKey { account, device_id: to_u32(row.get("device_id")) },
        mailbox: MailboxId(row.get("pk")),
        registration_id: to_u32(row.get("registration_id")),
        auth_key,
        name: row.get("name"),
        created_at: to_u64(row.get("created_at")),
        last_seen: row.get::<Option<i64>, _>("last_seen").map(to_u64),
    })
}

fn account_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: uuid_from(&row.get::<Vec<u8>, _>("id"))?,
        username: row.get("username"),
        identity_key: row.get("identity_key"),
    })
}

const DEVICE_COLUMNS: &str = "pk, account_id, device_id, registration_id, auth_key, name, created_at, last_seen";

/// Commits or rolls back depending on `result`.
async fn finish<T, E: From<StoreError>>(conn: &mut SqliteConnection, result: Result<T, E>) -> Result<T, E> {
    match result {
        Ok(v) => {
            sqlx::query("COMMIT").execute(&mut *conn).await.map_err(|e| E::from(backend(e)))?;
            Ok(v)
        }
        Err(e) => {
            // The original error matters more than a failed rollback.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

/// A write transaction whose commit is not synced on its own (`synchronous=NORMAL` for it
/// alone), for acks: a power loss may undo the latest of them (their envelopes are then
/// delivered again, which the delivery contract allows), a process crash cannot, and the
/// next synced commit (every send's) makes them durable with it, since the WAL is synced
/// in order. The connection goes back to `synchronous=FULL` in [`Unsynced::finish`]; one
/// that did not get there (an error, a cancelled future) is closed, never reused.
struct Unsynced {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    restored: bool,
}

impl Unsynced {
    async fn begin(pool: &SqlitePool) -> Result<Self, StoreError> {
        let conn = pool.acquire().await.map_err(backend)?;
        let mut tx = Unsynced { conn, restored: false };
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *tx.conn).await.map_err(backend)?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx.conn).await.map_err(backend)?;
        Ok(tx)
    }

    /// Commits (or rolls back on `Err`), then restores `synchronous=FULL`.
    async fn finish<T>(mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let out = finish(&mut self.conn, result).await;
        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *self.conn).await.map_err(backend)?;
        self.restored = true;
        out
    }
}

impl Drop for Unsynced {
    fn drop(&mut self) {
        if !self.restored {
            self.conn.close_on_drop();
        }
    }
}

async fn begin(pool: &SqlitePool) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, StoreError> {
    let mut conn = pool.acquire().await.map_err(backend)?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.map_err(backend)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MailboxStore;

    async fn synchronous(pool: &SqlitePool) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// An ack's transaction is unsynced; every send's must stay `synchronous=FULL` (2), or
    /// an acknowledged send could be lost at a power cut.
    #[tokio::test]
    async fn the_write_connection_is_synced_again_after_an_ack_finished_or_abandoned() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("hush.db").display());
        let store = SqliteStore::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
        const FULL: i64 = 2;
        assert_eq!(synchronous(&store.write).await, FULL);
        store.ack(&[(MailboxId(1), vec![1, 2])]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(synchronous(&store.write).await, FULL);
        // Abandoned half-way (an error, or a future dropped at shutdown): that connection is
        // closed, and the pool opens a synced one.
        let tx = Unsynced::begin(&store.write).await.unwrap_or_else(|e| panic!("{e}"));
        drop(tx);
        assert_eq!(synchronous(&store.write).await, FULL);
    }
}
