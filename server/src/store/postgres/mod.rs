//! The store on PostgreSQL: the durable state that several hushd nodes share.
//!
//! Nodes meet only in the database, so these rules keep them apart (the schema,
//! `migrations/postgres/0001_init.sql` and `0003_groups.sql`, states them too):
//! - Locks are taken in one order: group rows (`chat_groups`, by id), then device rows (by
//!   `pk`, with `FOR UPDATE`), then group messages (by group and seq). A transaction that
//!   changes several device rows (a batch of writes, of acks, a round of expiry) locks all of
//!   them up front, so two nodes never wait on each other in a cycle.
//! - A mailbox's `last_seq` and a group's `seq` only move under their row locks, held until
//!   commit: seqs strictly increase and become visible in that order.
//! - One-time prekeys are taken with `FOR UPDATE SKIP LOCKED`: concurrent takers on
//!   any node never get the same key and never wait for each other.
//!
//! Batches are written with `UNNEST` over arrays: one statement per table, not per row.
//! One module per concern implements its trait (`accounts`, `keys`, `mailbox`, `groups`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

use super::group_plan::{GroupState, GroupStates, refs_dropped};
use super::plan::{DeviceRow, DeviceSets, KeyHash, Plan, SeenKey};
use super::{Account, Device, DeviceKey, GroupPosition, MailboxId, SignedKey, StoreError};

mod accounts;
mod groups;
mod keys;
mod link;
mod mailbox;
mod push;
mod streams;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections each node keeps to the database.
const POOL_SIZE: u32 = 16;
/// Mailboxes cleaned per transaction by [`super::MailboxStore::expire`], so it never holds many locks for long.
const EXPIRE_CHUNK: usize = 512;

const DEVICE_COLUMNS: &str =
    "pk, account_id::text AS account_id, device_id, registration_id, auth_key, name, created_at, last_seen";

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} is out of range").into())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A device id as the `INTEGER` column holds it (ids beyond it match no device).
fn device_param(id: u32) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column).map_err(backend)
}

/// Reads a `BIGINT` column that holds a `u32` (key ids, registration ids).
fn get_u32(row: &PgRow, column: &str) -> Result<u32, StoreError> {
    u32::try_from(get::<i64>(row, column)?).map_err(|_| corrupt(column))
}

fn get_device_id(row: &PgRow) -> Result<u32, StoreError> {
    u32::try_from(get::<i32>(row, "device_id")?).map_err(|_| corrupt("device id"))
}

/// Reads a signed key from its (id, public key, signature) columns.
fn get_signed(row: &PgRow, [id, public_key, signature]: [&str; 3]) -> Result<SignedKey, StoreError> {
    Ok(SignedKey { id: get_u32(row, id)?, public_key: get(row, public_key)?, signature: get(row, signature)? })
}

fn get_uuid(row: &PgRow, column: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(&get::<String>(row, column)?).map_err(backend)
}

fn device_from_row(row: &PgRow) -> Result<Device, StoreError> {
    let auth: Vec<u8> = get(row, "auth_key")?;
    let auth_key: [u8; 32] = auth.try_into().map_err(|_| corrupt("auth key"))?;
    Ok(Device {
        key: DeviceKey { account: get_uuid(row, "account_id")?, device_id: get_device_id(row)? },
        mailbox: MailboxId(get(row, "pk")?),
        registration_id: get_u32(row, "registration_id")?,
        auth_key,
        name: get(row, "name")?,
        created_at: to_u64(get(row, "created_at")?),
        last_seen: get::<Option<i64>>(row, "last_seen")?.map(to_u64),
    })
}

fn account_from_row(row: &PgRow) -> Result<Account, StoreError> {
    Ok(Account { id: get_uuid(row, "id")?, username: get(row, "username")?, identity_key: get(row, "identity_key")? })
}

/// PostgreSQL-backed store; cheap to clone (it is a pool).

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host/db`) and migrates it.
    /// Several nodes may open the same database at once: migrations take an advisory lock.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(backend)?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(backend)?;
        MIGRATOR.run(&pool).await.map_err(backend)?;
        Ok(PostgresStore { pool })
    }
}

async fn account_exists(conn: &mut PgConnection, account: Uuid) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT 1 FROM accounts WHERE id = $1::uuid")
        .bind(account.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(found.is_some())
}

async fn device_pk(conn: &mut PgConnection, key: DeviceKey) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar("SELECT pk FROM devices WHERE account_id = $1::uuid AND device_id = $2")
        .bind(key.account.to_string())
        .bind(device_param(key.device_id))
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)
}

/// Locks the device rows `pks` (in `pk` order), so that changing them cannot deadlock with another node.
async fn lock_devices(conn: &mut PgConnection, pks: &[i64]) -> Result<(), StoreError> {
    sqlx::query("SELECT pk FROM devices WHERE pk = ANY($1) ORDER BY pk FOR UPDATE")
        .bind(pks)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Reads the devices of `accounts`; with `lock`, locks them (in `pk` order) until the transaction ends.
async fn load_sets(conn: &mut PgConnection, accounts: &[Uuid], lock: bool) -> Result<DeviceSets, StoreError> {
    let ids: Vec<String> = accounts.iter().map(Uuid::to_string).collect();
    let sql = format!(
        "SELECT pk, account_id::text AS account_id, device_id, registration_id, mailbox_count, last_seq \
         FROM devices WHERE account_id = ANY($1::uuid[]) ORDER BY pk{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let fetched = sqlx::query(&sql).bind(&ids).fetch_all(&mut *conn).await.map_err(backend)?;
    let mut sets = DeviceSets::default();
    let mut with_devices = HashSet::new();
    for row in &fetched {
        let account = get_uuid(row, "account_id")?;
        with_devices.insert(account);
        sets.add_device(
            account,
            DeviceRow {
                pk: get(row, "pk")?,
                device_id: get_device_id(row)?,
                registration_id: get_u32(row, "registration_id")?,
                mailbox_count: to_u64(get(row, "mailbox_count")?),
                last_seq: to_u64(get(row, "last_seq")?),
            },
        );
    }
    // An account may exist without devices; only those need a second look.
    let deviceless: Vec<String> = accounts.iter().filter(|a| !with_devices.contains(a)).map(Uuid::to_string).collect();
    if !deviceless.is_empty() {
        let found = sqlx::query("SELECT id::text AS id FROM accounts WHERE id = ANY($1::uuid[])")
            .bind(&deviceless)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        for row in &found {
            sets.add_account(get_uuid(row, "id")?);
        }
    }
    Ok(sets)
}

/// The idempotency keys among `hashes` that are stored, with their first answer. Read after
/// the batch's device rows (the senders' among them) are locked, so a resend committed by
/// another node is either visible here or waits for this transaction.
async fn seen_keys(conn: &mut PgConnection, hashes: &[KeyHash]) -> Result<HashMap<KeyHash, SeenKey>, StoreError> {
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let list: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
    let rows = sqlx::query("SELECT key_hash, server_ts, group_seq FROM send_keys WHERE key_hash = ANY($1::bytea[])")
        .bind(list)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    let mut seen = HashMap::with_capacity(rows.len());
    for row in &rows {
        let hash: KeyHash = get::<Vec<u8>>(row, "key_hash")?.try_into().map_err(|_| corrupt("send key"))?;
        seen.insert(hash, (to_u64(get(row, "server_ts")?), to_u64(get(row, "group_seq")?)));
    }
    Ok(seen)
}

/// Records the idempotency keys of the sends `plan` stores.
async fn write_keys(conn: &mut PgConnection, plan: &Plan) -> Result<(), StoreError> {
    if plan.keys.is_empty() {
        return Ok(());
    }
    let k = &plan.keys;
    let inserted = sqlx::query(
        "INSERT INTO send_keys (key_hash, server_ts, expires_at, group_seq) \
         SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::bigint[]) ON CONFLICT (key_hash) DO NOTHING",
    )
    .bind(k.iter().map(|r| r.hash.as_slice()).collect::<Vec<&[u8]>>())
    .bind(k.iter().map(|r| to_i64(r.server_ts)).collect::<Vec<_>>())
    .bind(k.iter().map(|r| to_i64(r.expires_at)).collect::<Vec<_>>())
    .bind(k.iter().map(|r| to_i64(r.group_seq)).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    // The sender's rows were locked before the keys were read, so no other transaction can
    // have stored one of them since; if one did, refusing the batch beats storing a send twice.
    if inserted.rows_affected() != k.len() as u64 {
        return Err(StoreError::Backend("a send key was stored concurrently; batch refused".into()));
    }
    Ok(())
}

/// Bumps the locked mailboxes' `last_seq`/`mailbox_count` and inserts the envelopes of `plan`.
async fn write_plan(conn: &mut PgConnection, plan: &Plan) -> Result<(), StoreError> {
    write_keys(conn, plan).await?;
    write_groups(conn, plan).await?;
    if plan.appends.is_empty() {
        return Ok(());
    }
    let pks: Vec<i64> = plan.bumped.keys().copied().collect();
    let added: Vec<i64> = plan.bumped.values().map(|&(n, _)| to_i64(n)).collect();
    let bumped = sqlx::query(
        "UPDATE devices d SET last_seq = d.last_seq + u.n, mailbox_count = d.mailbox_count + u.n \
         FROM UNNEST($1::bigint[], $2::bigint[]) AS u(pk, n) WHERE d.pk = u.pk RETURNING d.pk, d.last_seq",
    )
    .bind(&pks)
    .bind(&added)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    // The rows were locked when `last_seq` was read, so it cannot have moved; if it
    // did, refusing the batch beats handing out a seq twice.
    let consistent = bumped.len() == plan.bumped.len()
        && bumped.iter().all(|r| {
            let (Ok(pk), Ok(seq)) = (r.try_get::<i64, _>("pk"), r.try_get::<i64, _>("last_seq")) else {
                return false;
            };
            plan.bumped.get(&pk).is_some_and(|&(_, want)| to_u64(seq) == want)
        });
    if !consistent {
        return Err(StoreError::Backend("a mailbox sequence moved under its lock; batch refused".into()));
    }
    let a = &plan.appends;
    sqlx::query(
        "INSERT INTO envelopes (device_pk, seq, server_ts, expires_at, kind, content, group_id, group_seq) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::bytea[], \
         $7::text[]::uuid[], $8::bigint[])",
    )
    .bind(a.iter().map(|e| e.pk).collect::<Vec<_>>())
    .bind(a.iter().map(|e| to_i64(e.seq)).collect::<Vec<_>>())
    .bind(a.iter().map(|e| to_i64(e.server_ts)).collect::<Vec<_>>())
    .bind(a.iter().map(|e| to_i64(e.expires_at)).collect::<Vec<_>>())
    .bind(a.iter().map(|e| e.kind).collect::<Vec<_>>())
    .bind(a.iter().map(|e| e.content.as_ref()).collect::<Vec<&[u8]>>())
    .bind(a.iter().map(|e| e.group.map(|g| g.group.to_string())).collect::<Vec<_>>())
    .bind(a.iter().map(|e| e.group.map(|g| to_i64(g.seq))).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Writes a plan's group messages (once each), group seqs and distribution records. The
/// groups were locked when the batch was read.
async fn write_groups(conn: &mut PgConnection, plan: &Plan) -> Result<(), StoreError> {
    let m = &plan.group_messages;
    if !m.is_empty() {
        sqlx::query(
            "INSERT INTO group_messages (group_id, seq, server_ts, expires_at, kind, content, refs) \
             SELECT * FROM UNNEST($1::text[]::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], \
             $6::bytea[], $7::bigint[])",
        )
        .bind(m.iter().map(|r| r.group.to_string()).collect::<Vec<_>>())
        .bind(m.iter().map(|r| to_i64(r.seq)).collect::<Vec<_>>())
        .bind(m.iter().map(|r| to_i64(r.server_ts)).collect::<Vec<_>>())
        .bind(m.iter().map(|r| to_i64(r.expires_at)).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.kind).collect::<Vec<_>>())
        .bind(m.iter().map(|r| r.content.as_ref()).collect::<Vec<&[u8]>>())
        .bind(m.iter().map(|r| to_i64(r.refs)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    if !plan.group_refs.is_empty() {
        let r = &plan.group_refs;
        sqlx::query(
            "UPDATE group_messages m SET refs = m.refs + u.n \
             FROM UNNEST($1::text[]::uuid[], $2::bigint[], $3::bigint[]) AS u(group_id, seq, n) \
             WHERE m.group_id = u.group_id AND m.seq = u.seq",
        )
        .bind(r.keys().map(|(g, _)| g.to_string()).collect::<Vec<_>>())
        .bind(r.keys().map(|&(_, seq)| to_i64(seq)).collect::<Vec<_>>())
        .bind(r.values().map(|&n| to_i64(n)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    if !plan.group_seqs.is_empty() {
        sqlx::query(
            "UPDATE chat_groups g SET seq = u.seq FROM UNNEST($1::text[]::uuid[], $2::bigint[]) AS u(id, seq) \
             WHERE g.id = u.id",
        )
        .bind(plan.group_seqs.keys().map(Uuid::to_string).collect::<Vec<_>>())
        .bind(plan.group_seqs.values().map(|&s| to_i64(s)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    // One upsert may not touch a row twice: the last record of a (group, sender, recipient) wins.
    let mut distributions: BTreeMap<(Uuid, i64, i64), u64> = BTreeMap::new();
    for r in &plan.distributions {
        distributions.insert((r.group, r.sender_pk, r.recipient_pk), r.epoch);
    }
    if !distributions.is_empty() {
        sqlx::query(
            "INSERT INTO group_distributions (group_id, sender_pk, recipient_pk, epoch) \
             SELECT * FROM UNNEST($1::text[]::uuid[], $2::bigint[], $3::bigint[], $4::bigint[]) \
             ON CONFLICT (group_id, sender_pk, recipient_pk) DO UPDATE SET epoch = EXCLUDED.epoch",
        )
        .bind(distributions.keys().map(|k| k.0.to_string()).collect::<Vec<_>>())
        .bind(distributions.keys().map(|k| k.1).collect::<Vec<_>>())
        .bind(distributions.keys().map(|k| k.2).collect::<Vec<_>>())
        .bind(distributions.values().map(|&e| to_i64(e)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// Reads (and locks, in id order) what the send path needs of `groups`: counters and
/// members. Distributions are added by [`load_distributions`] once the device rows are known.
async fn load_groups(conn: &mut PgConnection, groups: &[Uuid]) -> Result<GroupStates, StoreError> {
    let mut states = GroupStates::new();
    if groups.is_empty() {
        return Ok(states);
    }
    let ids: Vec<String> = groups.iter().map(Uuid::to_string).collect();
    let rows = sqlx::query(
        "SELECT id::text AS id, epoch, seq, read_path FROM chat_groups WHERE id = ANY($1::text[]::uuid[]) \
         ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for row in &rows {
        let state = GroupState {
            epoch: to_u64(get(row, "epoch")?),
            seq: to_u64(get(row, "seq")?),
            read_path: get(row, "read_path")?,
            ..GroupState::default()
        };
        states.insert(get_uuid(row, "id")?, state);
    }
    let members = sqlx::query(
        "SELECT group_id::text AS group_id, account_id::text AS account_id FROM group_members \
         WHERE group_id = ANY($1::text[]::uuid[])",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for row in &members {
        if let Some(state) = states.get_mut(&get_uuid(row, "group_id")?) {
            state.members.push(get_uuid(row, "account_id")?);
        }
    }
    Ok(states)
}

/// Adds to `states` the current-epoch distributions sent by the devices `senders`.
async fn load_distributions(
    conn: &mut PgConnection,
    states: &mut GroupStates,
    senders: &[i64],
) -> Result<(), StoreError> {
    if states.is_empty() || senders.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = states.keys().map(Uuid::to_string).collect();
    let rows = sqlx::query(
        "SELECT d.group_id::text AS group_id, d.sender_pk, d.recipient_pk FROM group_distributions d \
         JOIN chat_groups g ON g.id = d.group_id AND g.epoch = d.epoch \
         WHERE d.group_id = ANY($1::text[]::uuid[]) AND d.sender_pk = ANY($2::bigint[])",
    )
    .bind(&groups)
    .bind(senders)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    for row in &rows {
        if let Some(state) = states.get_mut(&get_uuid(row, "group_id")?) {
            state.distributions.insert((get(row, "sender_pk")?, get(row, "recipient_pk")?));
        }
    }
    Ok(())
}

/// One deleted envelope: its mailbox, and the group message it referenced, if any.
type Gone = (i64, Option<GroupPosition>);

/// Reads a row of `RETURNING device_pk, group_id::text AS group_id, group_seq`.
fn gone_from_row(row: &PgRow) -> Result<Gone, StoreError> {
    let group = match (get::<Option<String>>(row, "group_id")?, get::<Option<i64>>(row, "group_seq")?) {
        (Some(id), Some(seq)) => {
            Some(GroupPosition { group: Uuid::parse_str(&id).map_err(backend)?, seq: to_u64(seq) })
        }
        _ => None,
    };
    Ok((get(row, "device_pk")?, group))
}

/// What a delete of envelopes returns.
const GONE_COLUMNS: &str = "device_pk, group_id::text AS group_id, group_seq";

/// Lowers the mailbox counters for deleted envelopes (their device rows are locked), and the
/// reference counts of the group messages they referenced (deleting those left without any).
async fn lower_counts(conn: &mut PgConnection, gone: &[Gone]) -> Result<(), StoreError> {
    if gone.is_empty() {
        return Ok(());
    }
    let mut per_mailbox: BTreeMap<i64, i64> = BTreeMap::new();
    for (pk, _) in gone {
        *per_mailbox.entry(*pk).or_default() += 1;
    }
    sqlx::query(
        "UPDATE devices d SET mailbox_count = d.mailbox_count - u.n \
         FROM UNNEST($1::bigint[], $2::bigint[]) AS u(pk, n) WHERE d.pk = u.pk",
    )
    .bind(per_mailbox.keys().copied().collect::<Vec<_>>())
    .bind(per_mailbox.values().copied().collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    let refs: Vec<GroupPosition> = gone.iter().filter_map(|(_, g)| *g).collect();
    drop_group_refs(conn, &refs).await
}

/// Lowers the reference counts of group messages by one per entry of `refs` (locking them in
/// (group, seq) order first), and deletes the messages left without references.
async fn drop_group_refs(conn: &mut PgConnection, refs: &[GroupPosition]) -> Result<(), StoreError> {
    if refs.is_empty() {
        return Ok(());
    }
    let dropped = refs_dropped(refs);
    let groups: Vec<String> = dropped.keys().map(|(g, _)| g.to_string()).collect();
    let seqs: Vec<i64> = dropped.keys().map(|&(_, s)| to_i64(s)).collect();
    let counts: Vec<i64> = dropped.values().map(|&n| to_i64(n)).collect();
    sqlx::query(
        "SELECT 1 FROM group_messages m JOIN UNNEST($1::text[]::uuid[], $2::bigint[]) AS u(g, s) \
         ON m.group_id = u.g AND m.seq = u.s ORDER BY m.group_id, m.seq FOR UPDATE OF m",
    )
    .bind(&groups)
    .bind(&seqs)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query(
        "UPDATE group_messages m SET refs = m.refs - u.n \
         FROM UNNEST($1::text[]::uuid[], $2::bigint[], $3::bigint[]) AS u(g, s, n) \
         WHERE m.group_id = u.g AND m.seq = u.s",
    )
    .bind(&groups)
    .bind(&seqs)
    .bind(&counts)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query(
        "DELETE FROM group_messages m USING UNNEST($1::text[]::uuid[], $2::bigint[]) AS u(g, s) \
         WHERE m.group_id = u.g AND m.seq = u.s AND m.refs <= 0",
    )
    .bind(&groups)
    .bind(&seqs)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}
