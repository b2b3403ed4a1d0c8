//! [`Store`] on PostgreSQL: the durable state that several hushd nodes share.
//!
//! Nodes meet only in the database, so these rules keep them apart (the schema,
//! `migrations/postgres/0001_init.sql`, states them too):
//! - A transaction that changes several device rows (a batch of sends, of acks, a
//!   round of expiry) first locks all of them with `FOR UPDATE`, in `pk` order, so
//!   two nodes never wait on each other in a cycle.
//! - A mailbox's `last_seq` only moves under that lock, which is held until commit:
//!   a device's seqs strictly increase and become visible in that order.
//! - One-time prekeys are taken with `FOR UPDATE SKIP LOCKED`: concurrent takers on
//!   any node never get the same key and never wait for each other.
//!
//! Batches are written with `UNNEST` over arrays: one statement per table, not per row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

use super::plan::{self, CheckMode, DeviceRow, DeviceSets, KeyHash, Plan, batch_accounts, batch_key_hashes};
use super::{
    Account, Bundle, Device, DeviceKey, MailboxId, MailboxRead, NewAccount, NewDeviceRecord, OneTimeAllowed,
    OneTimeKey, PreKeyCounts, PreKeyUploadRecord, RecipientBatch, SendItem, SendOutcome, SendRejection, SignedKey,
    Store, StoreError, StoredEnvelope, TrustRootCheck, day_floor,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections each node keeps to the database.
const POOL_SIZE: u32 = 16;
/// Mailboxes cleaned per transaction by [`Store::expire`], so it never holds many locks for long.
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

    async fn insert_device(
        conn: &mut PgConnection,
        account: Uuid,
        device_id: u32,
        device: &NewDeviceRecord,
    ) -> Result<(), StoreError> {
        let pk: i64 = sqlx::query_scalar(
            "INSERT INTO devices (account_id, device_id, registration_id, auth_key, name, created_at, \
             signed_prekey_id, signed_prekey, signed_prekey_sig, kyber_lr_id, kyber_lr, kyber_lr_sig) \
             VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING pk",
        )
        .bind(account.to_string())
        .bind(device_param(device_id))
        .bind(i64::from(device.registration_id))
        .bind(device.auth_key.as_slice())
        .bind(device.name.as_deref())
        .bind(to_i64(device.created_at))
        .bind(i64::from(device.signed_prekey.id))
        .bind(&device.signed_prekey.public_key)
        .bind(&device.signed_prekey.signature)
        .bind(i64::from(device.kyber_last_resort.id))
        .bind(&device.kyber_last_resort.public_key)
        .bind(&device.kyber_last_resort.signature)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
        Self::insert_one_time_keys(conn, pk, &device.one_time_prekeys, &device.one_time_kyber_prekeys).await
    }

    async fn replace_signed_keys(
        conn: &mut PgConnection,
        pk: i64,
        upload: &PreKeyUploadRecord,
    ) -> Result<(), StoreError> {
        if let Some(k) = &upload.signed_prekey {
            sqlx::query(
                "UPDATE devices SET signed_prekey_id = $1, signed_prekey = $2, signed_prekey_sig = $3 WHERE pk = $4",
            )
            .bind(i64::from(k.id))
            .bind(&k.public_key)
            .bind(&k.signature)
            .bind(pk)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        }
        if let Some(k) = &upload.kyber_last_resort {
            sqlx::query("UPDATE devices SET kyber_lr_id = $1, kyber_lr = $2, kyber_lr_sig = $3 WHERE pk = $4")
                .bind(i64::from(k.id))
                .bind(&k.public_key)
                .bind(&k.signature)
                .bind(pk)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Adds one-time keys; a key whose id exists replaces it (the last one of an id wins).
    async fn insert_one_time_keys(
        conn: &mut PgConnection,
        pk: i64,
        ec: &[OneTimeKey],
        kyber: &[SignedKey],
    ) -> Result<(), StoreError> {
        // One upsert may not touch a row twice, so duplicate ids are folded first.
        let ec: BTreeMap<u32, &OneTimeKey> = ec.iter().map(|k| (k.id, k)).collect();
        if !ec.is_empty() {
            sqlx::query(
                "INSERT INTO one_time_prekeys (device_pk, key_id, public_key) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::bytea[]) \
                 ON CONFLICT (device_pk, key_id) DO UPDATE SET public_key = EXCLUDED.public_key",
            )
            .bind(pk)
            .bind(ec.keys().map(|&id| i64::from(id)).collect::<Vec<_>>())
            .bind(ec.values().map(|k| k.public_key.as_slice()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        }
        let kyber: BTreeMap<u32, &SignedKey> = kyber.iter().map(|k| (k.id, k)).collect();
        if !kyber.is_empty() {
            sqlx::query(
                "INSERT INTO one_time_kyber_prekeys (device_pk, key_id, public_key, signature) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::bytea[], $4::bytea[]) \
                 ON CONFLICT (device_pk, key_id) DO UPDATE \
                 SET public_key = EXCLUDED.public_key, signature = EXCLUDED.signature",
            )
            .bind(pk)
            .bind(kyber.keys().map(|&id| i64::from(id)).collect::<Vec<_>>())
            .bind(kyber.values().map(|k| k.public_key.as_slice()).collect::<Vec<_>>())
            .bind(kyber.values().map(|k| k.signature.as_slice()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        }
        Ok(())
    }

    /// Takes the lowest unclaimed one-time key of each kind (skipping keys another
    /// transaction is taking) and builds the bundle.
    async fn take_one_bundle(conn: &mut PgConnection, row: &PgRow, one_time: bool) -> Result<Bundle, StoreError> {
        let pk: i64 = get(row, "pk")?;
        if !one_time {
            return Ok(Bundle {
                device_id: get_device_id(row)?,
                registration_id: get_u32(row, "registration_id")?,
                signed_prekey: get_signed(row, ["signed_prekey_id", "signed_prekey", "signed_prekey_sig"])?,
                kyber_prekey: get_signed(row, ["kyber_lr_id", "kyber_lr", "kyber_lr_sig"])?,
                kyber_last_resort: true,
                prekey: None,
            });
        }
        let prekey = sqlx::query(
            "DELETE FROM one_time_prekeys WHERE (device_pk, key_id) = \
             (SELECT device_pk, key_id FROM one_time_prekeys WHERE device_pk = $1 \
              ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING key_id, public_key",
        )
        .bind(pk)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?
        .map(|r| Ok::<_, StoreError>(OneTimeKey { id: get_u32(&r, "key_id")?, public_key: get(&r, "public_key")? }))
        .transpose()?;
        let kyber = sqlx::query(
            "DELETE FROM one_time_kyber_prekeys WHERE (device_pk, key_id) = \
             (SELECT device_pk, key_id FROM one_time_kyber_prekeys WHERE device_pk = $1 \
              ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING key_id, public_key, signature",
        )
        .bind(pk)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
        let (kyber_prekey, kyber_last_resort) = match kyber {
            Some(r) => (get_signed(&r, ["key_id", "public_key", "signature"])?, false),
            None => (get_signed(row, ["kyber_lr_id", "kyber_lr", "kyber_lr_sig"])?, true),
        };
        Ok(Bundle {
            device_id: get_device_id(row)?,
            registration_id: get_u32(row, "registration_id")?,
            signed_prekey: get_signed(row, ["signed_prekey_id", "signed_prekey", "signed_prekey_sig"])?,
            kyber_prekey,
            kyber_last_resort,
            prekey,
        })
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
async fn seen_keys(conn: &mut PgConnection, hashes: &[KeyHash]) -> Result<HashMap<KeyHash, u64>, StoreError> {
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    let list: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
    let rows = sqlx::query("SELECT key_hash, server_ts FROM send_keys WHERE key_hash = ANY($1::bytea[])")
        .bind(list)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    let mut seen = HashMap::with_capacity(rows.len());
    for row in &rows {
        let hash: KeyHash = get::<Vec<u8>>(row, "key_hash")?.try_into().map_err(|_| corrupt("send key"))?;
        seen.insert(hash, to_u64(get(row, "server_ts")?));
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
        "INSERT INTO send_keys (key_hash, server_ts, expires_at) \
         SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[]) ON CONFLICT (key_hash) DO NOTHING",
    )
    .bind(k.iter().map(|r| r.hash.as_slice()).collect::<Vec<&[u8]>>())
    .bind(k.iter().map(|r| to_i64(r.server_ts)).collect::<Vec<_>>())
    .bind(k.iter().map(|r| to_i64(r.expires_at)).collect::<Vec<_>>())
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
        "INSERT INTO envelopes (device_pk, seq, server_ts, expires_at, kind, content) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::bytea[])",
    )
    .bind(a.iter().map(|e| e.pk).collect::<Vec<_>>())
    .bind(a.iter().map(|e| to_i64(e.seq)).collect::<Vec<_>>())
    .bind(a.iter().map(|e| to_i64(e.server_ts)).collect::<Vec<_>>())
    .bind(a.iter().map(|e| to_i64(e.expires_at)).collect::<Vec<_>>())
    .bind(a.iter().map(|e| e.kind).collect::<Vec<_>>())
    .bind(a.iter().map(|e| e.content.as_ref()).collect::<Vec<&[u8]>>())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Wraps `delete` (a `DELETE FROM envelopes ... RETURNING device_pk`) so that the same
/// statement lowers the mailbox counts to match; it returns one row `n` per mailbox.
/// The device rows must already be locked.
fn counted_delete(delete: &str) -> String {
    format!(
        "WITH gone AS ({delete}) \
         UPDATE devices d SET mailbox_count = d.mailbox_count - g.n \
         FROM (SELECT device_pk, COUNT(*) AS n FROM gone GROUP BY device_pk) g \
         WHERE d.pk = g.device_pk RETURNING g.n"
    )
}

/// Adds up the `n` column of a [`counted_delete`] result.
fn deleted_total(rows: &[PgRow]) -> Result<u64, StoreError> {
    rows.iter().map(|r| get::<i64>(r, "n").map(to_u64)).sum()
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_account(&self, account: &NewAccount) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, username, identity_key, created_at) VALUES ($1::uuid, $2, $3, $4) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(account.id.to_string())
        .bind(&account.username)
        .bind(&account.identity_key)
        .bind(to_i64(account.device.created_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::UsernameTaken);
        }
        Self::insert_device(&mut tx, account.id, 1, &account.device).await?;
        tx.commit().await.map_err(backend)
    }

    async fn add_device(&self, account: Uuid, device: &NewDeviceRecord, max_devices: u32) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Locking the account serializes device changes of one account across nodes.
        let locked = sqlx::query("SELECT 1 FROM accounts WHERE id = $1::uuid FOR UPDATE")
            .bind(account.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if locked.is_none() {
            return Err(StoreError::UnknownAccount);
        }
        let taken: Vec<i32> = sqlx::query_scalar("SELECT device_id FROM devices WHERE account_id = $1::uuid")
            .bind(account.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        if taken.len() >= max_devices as usize {
            return Err(StoreError::TooManyDevices(max_devices));
        }
        let id = (2..=hush_wire::limits::MAX_DEVICE_ID)
            .find(|&id| !taken.contains(&device_param(id)))
            .ok_or(StoreError::TooManyDevices(max_devices))?;
        Self::insert_device(&mut tx, account, id, device).await?;
        tx.commit().await.map_err(backend)?;
        Ok(id)
    }

    async fn account(&self, id: Uuid) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT id::text AS id, username, identity_key FROM accounts WHERE id = $1::uuid")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT id::text AS id, username, identity_key FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn devices(&self, account: Uuid) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE account_id = $1::uuid ORDER BY device_id"
        ))
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(device_from_row).collect()
    }

    async fn device(&self, key: DeviceKey) -> Result<Option<Device>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE account_id = $1::uuid AND device_id = $2"
        ))
        .bind(key.account.to_string())
        .bind(device_param(key.device_id))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn devices_by_keys(&self, keys: &[DeviceKey]) -> Result<Vec<Option<Device>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let accounts: Vec<String> = keys.iter().map(|k| k.account.to_string()).collect();
        let ids: Vec<i32> = keys.iter().map(|k| device_param(k.device_id)).collect();
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d JOIN UNNEST($1::text[]::uuid[], $2::int[]) AS k(a, n) \
             ON d.account_id = k.a AND d.device_id = k.n"
        ))
        .bind(accounts)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let found = rows.iter().map(device_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(plan::align_devices(keys, found))
    }

    async fn remove_device(&self, key: DeviceKey) -> Result<bool, StoreError> {
        // Its prekeys and envelopes go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM devices WHERE account_id = $1::uuid AND device_id = $2")
            .bind(key.account.to_string())
            .bind(device_param(key.device_id))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_device(&self, key: DeviceKey, now_ms: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE devices SET last_seen = $1 WHERE account_id = $2::uuid AND device_id = $3 \
             AND last_seen IS DISTINCT FROM $1",
        )
        .bind(to_i64(day_floor(now_ms)))
        .bind(key.account.to_string())
        .bind(device_param(key.device_id))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn upload_prekeys(&self, key: DeviceKey, upload: &PreKeyUploadRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let pk = Self::device_pk(&mut tx, key).await?.ok_or(StoreError::UnknownDevice)?;
        Self::replace_signed_keys(&mut tx, pk, upload).await?;
        Self::insert_one_time_keys(&mut tx, pk, &upload.one_time_prekeys, &upload.one_time_kyber_prekeys).await?;
        tx.commit().await.map_err(backend)
    }

    async fn prekey_counts(&self, key: DeviceKey) -> Result<PreKeyCounts, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE device_pk = d.pk) AS ec, \
                    (SELECT COUNT(*) FROM one_time_kyber_prekeys WHERE device_pk = d.pk) AS kyber \
             FROM devices d WHERE d.account_id = $1::uuid AND d.device_id = $2",
        )
        .bind(key.account.to_string())
        .bind(device_param(key.device_id))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .ok_or(StoreError::UnknownDevice)?;
        Ok(PreKeyCounts { ec: get_u32(&row, "ec")?, kyber: get_u32(&row, "kyber")? })
    }

    async fn take_bundles(
        &self,
        account: Uuid,
        device_id: Option<u32>,
        one_time: OneTimeAllowed<'_>,
    ) -> Result<Vec<Bundle>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if !Self::account_exists(&mut tx, account).await? {
            return Err(StoreError::UnknownAccount);
        }
        let rows = sqlx::query(
            "SELECT pk, device_id, registration_id, signed_prekey_id, signed_prekey, signed_prekey_sig, \
             kyber_lr_id, kyber_lr, kyber_lr_sig FROM devices WHERE account_id = $1::uuid \
             AND ($2::integer IS NULL OR device_id = $2) ORDER BY device_id",
        )
        .bind(account.to_string())
        .bind(device_id.map(device_param))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        if rows.is_empty() {
            return Err(StoreError::UnknownDevice);
        }
        let mut bundles = Vec::with_capacity(rows.len());
        for row in &rows {
            let allowed = one_time(get_device_id(row)?);
            bundles.push(Self::take_one_bundle(&mut tx, row, allowed).await?);
        }
        tx.commit().await.map_err(backend)?;
        Ok(bundles)
    }

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

    async fn commit_sends(&self, items: &[SendItem], max_mailbox: u64) -> Result<Vec<SendOutcome>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let accounts = batch_accounts(items);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Every device row the batch may touch is locked here, in pk order, before any write.
        let mut sets = load_sets(&mut tx, &accounts, true).await?;
        let seen = seen_keys(&mut tx, &batch_key_hashes(items)).await?;
        let plan = plan::plan(&mut sets, items, max_mailbox, &seen);
        write_plan(&mut tx, &plan).await?;
        tx.commit().await.map_err(backend)?;
        Ok(plan.outcomes)
    }

    async fn fetch(&self, mailbox: MailboxId, after_seq: u64, limit: u32) -> Result<Vec<StoredEnvelope>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, server_ts, kind, content FROM envelopes WHERE device_pk = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(mailbox.0)
        .bind(to_i64(after_seq))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(StoredEnvelope {
                    seq: to_u64(get(r, "seq")?),
                    server_ts: to_u64(get(r, "server_ts")?),
                    kind: get(r, "kind")?,
                    content: Bytes::from(get::<Vec<u8>>(r, "content")?),
                })
            })
            .collect()
    }

    async fn fetch_many(&self, reads: &[MailboxRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let pks: Vec<i64> = reads.iter().map(|r| r.mailbox.0).collect();
        let afters: Vec<i64> = reads.iter().map(|r| to_i64(r.after_seq)).collect();
        let limits: Vec<i64> = reads.iter().map(|r| i64::from(r.limit)).collect();
        let rows = sqlx::query(
            "SELECT w.i, e.seq, e.server_ts, e.kind, e.content \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS w(pk, after_seq, lim, i) \
             CROSS JOIN LATERAL (SELECT seq, server_ts, kind, content FROM envelopes \
                 WHERE device_pk = w.pk AND seq > w.after_seq ORDER BY seq LIMIT w.lim) e \
             ORDER BY w.i, e.seq",
        )
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
            list.push(StoredEnvelope {
                seq: to_u64(get(r, "seq")?),
                server_ts: to_u64(get(r, "server_ts")?),
                kind: get(r, "kind")?,
                content: Bytes::from(get::<Vec<u8>>(r, "content")?),
            });
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
        Self::lock_devices(&mut tx, &locked).await?;
        let sql = counted_delete(
            "DELETE FROM envelopes e USING UNNEST($1::bigint[], $2::bigint[]) AS a(pk, seq) \
             WHERE e.device_pk = a.pk AND e.seq = a.seq RETURNING e.device_pk",
        );
        let rows = sqlx::query(&sql).bind(&pks).bind(&seqs).fetch_all(&mut *tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        deleted_total(&rows)
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
            counted_delete("DELETE FROM envelopes WHERE device_pk = ANY($1) AND expires_at <= $2 RETURNING device_pk");
        let mut total = 0;
        for chunk in mailboxes.chunks(EXPIRE_CHUNK) {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            Self::lock_devices(&mut tx, chunk).await?;
            let rows = sqlx::query(&sql).bind(chunk).bind(now).fetch_all(&mut *tx).await.map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            total += deleted_total(&rows)?;
        }
        sqlx::query("DELETE FROM send_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(total)
    }

    async fn envelope_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(mailbox_count), 0)::bigint FROM devices")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(to_u64(n))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(backend)?;
        Ok(())
    }

    async fn record_trust_root(&self, trust_root: &[u8]) -> Result<TrustRootCheck, StoreError> {
        // Two nodes starting at once: the primary key makes one insert win; both then read it.
        let inserted = sqlx::query(
            "INSERT INTO server_meta (name, value) VALUES ('trust_root', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(trust_root)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() > 0 {
            return Ok(TrustRootCheck::Recorded);
        }
        let recorded: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_meta WHERE name = 'trust_root'")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(if recorded == trust_root { TrustRootCheck::Matches } else { TrustRootCheck::Differs { recorded } })
    }
}
