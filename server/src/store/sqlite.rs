//! [`Store`] on SQLite (sqlx, WAL, `synchronous=FULL`): the embedded default.
//!
//! All writes go through one connection (SQLite has one writer anyway), so a
//! write transaction never fails for lack of the write lock; reads use a pool.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::plan::{self, CheckMode, DeviceRow, DeviceSets, KeyHash, Plan, batch_accounts, batch_key_hashes};
use super::{
    Account, Bundle, Device, DeviceKey, MailboxId, MailboxRead, NewAccount, NewDeviceRecord, OneTimeAllowed,
    OneTimeKey, PreKeyCounts, PreKeyUploadRecord, RecipientBatch, SendItem, SendOutcome, SendRejection, SignedKey,
    Store, StoreError, StoredEnvelope, TrustRootCheck, day_floor,
};

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

/// Envelopes per multi-row INSERT (6 parameters each).
const INSERT_CHUNK: usize = 64;

/// `INSERT INTO envelopes ... VALUES (?,?,?,?,?,?), ...` for `rows` rows; the strings are
/// built once, so sqlx's statement cache sees the same SQL every time.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=INSERT_CHUNK)
            .map(|n| {
                let values = vec!["(?, ?, ?, ?, ?, ?)"; n.max(1)].join(", ");
                format!("INSERT INTO envelopes (device_pk, seq, server_ts, expires_at, kind, content) VALUES {values}")
            })
            .collect()
    });
    &all[rows.min(INSERT_CHUNK)]
}

/// A JSON array of account ids as hex strings, for `json_each` + `unhex`.
fn hex_id_array(ids: &[Uuid]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("\"{}\"", id.simple())).collect();
    format!("[{}]", quoted.join(","))
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

    async fn insert_device(
        conn: &mut SqliteConnection,
        account: Uuid,
        device_id: u32,
        device: &NewDeviceRecord,
    ) -> Result<(), StoreError> {
        let pk: i64 = sqlx::query_scalar(
            "INSERT INTO devices (account_id, device_id, registration_id, auth_key, name, created_at, \
             signed_prekey_id, signed_prekey, signed_prekey_sig, kyber_lr_id, kyber_lr, kyber_lr_sig) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk",
        )
        .bind(account.as_bytes().as_slice())
        .bind(device_id)
        .bind(device.registration_id)
        .bind(device.auth_key.as_slice())
        .bind(device.name.as_deref())
        .bind(to_i64(device.created_at))
        .bind(device.signed_prekey.id)
        .bind(&device.signed_prekey.public_key)
        .bind(&device.signed_prekey.signature)
        .bind(device.kyber_last_resort.id)
        .bind(&device.kyber_last_resort.public_key)
        .bind(&device.kyber_last_resort.signature)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
        let upload = PreKeyUploadRecord {
            signed_prekey: None,
            kyber_last_resort: None,
            one_time_prekeys: device.one_time_prekeys.clone(),
            one_time_kyber_prekeys: device.one_time_kyber_prekeys.clone(),
        };
        Self::insert_prekeys(conn, pk, &upload).await
    }

    async fn insert_prekeys(
        conn: &mut SqliteConnection,
        pk: i64,
        upload: &PreKeyUploadRecord,
    ) -> Result<(), StoreError> {
        if let Some(k) = &upload.signed_prekey {
            sqlx::query(
                "UPDATE devices SET signed_prekey_id = ?, signed_prekey = ?, signed_prekey_sig = ? WHERE pk = ?",
            )
            .bind(k.id)
            .bind(&k.public_key)
            .bind(&k.signature)
            .bind(pk)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        }
        if let Some(k) = &upload.kyber_last_resort {
            sqlx::query("UPDATE devices SET kyber_lr_id = ?, kyber_lr = ?, kyber_lr_sig = ? WHERE pk = ?")
                .bind(k.id)
                .bind(&k.public_key)
                .bind(&k.signature)
                .bind(pk)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        for k in &upload.one_time_prekeys {
            sqlx::query("INSERT OR REPLACE INTO one_time_prekeys (device_pk, key_id, public_key) VALUES (?, ?, ?)")
                .bind(pk)
                .bind(k.id)
                .bind(&k.public_key)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        for k in &upload.one_time_kyber_prekeys {
            sqlx::query(
                "INSERT OR REPLACE INTO one_time_kyber_prekeys (device_pk, key_id, public_key, signature) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(pk)
            .bind(k.id)
            .bind(&k.public_key)
            .bind(&k.signature)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        }
        Ok(())
    }

    async fn device_pk(conn: &mut SqliteConnection, key: DeviceKey) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT pk FROM devices WHERE account_id = ? AND device_id = ?")
            .bind(key.account.as_bytes().as_slice())
            .bind(key.device_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)
    }

    /// The device ids of an account.
    async fn device_ids(conn: &mut SqliteConnection, account: Uuid) -> Result<Vec<u32>, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT device_id FROM devices WHERE account_id = ? ORDER BY device_id")
            .bind(account.as_bytes().as_slice())
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        Ok(ids.into_iter().map(to_u32).collect())
    }

    /// Reads the devices of `accounts` (and which accounts exist) in one query.
    async fn load_sets(conn: &mut SqliteConnection, accounts: &[Uuid]) -> Result<DeviceSets, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, d.pk, d.device_id, d.registration_id, d.mailbox_count, d.last_seq \
             FROM accounts a LEFT JOIN devices d ON d.account_id = a.id \
             WHERE a.id IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(hex_id_array(accounts))
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        let mut sets = DeviceSets::default();
        for row in &rows {
            let id: Vec<u8> = row.get(0);
            let account = Uuid::from_slice(&id).map_err(backend)?;
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

    /// The idempotency keys among `hashes` that are stored, with their first answer.
    async fn seen_keys(conn: &mut SqliteConnection, hashes: &[KeyHash]) -> Result<HashMap<KeyHash, u64>, StoreError> {
        if hashes.is_empty() {
            return Ok(HashMap::new());
        }
        let list: Vec<String> = hashes.iter().map(|h| format!("\"{}\"", hex::encode(h))).collect();
        let rows = sqlx::query(
            "SELECT key_hash, server_ts FROM send_keys WHERE key_hash IN (SELECT unhex(value) FROM json_each(?1))",
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
            seen.insert(hash, to_u64(row.get(1)));
        }
        Ok(seen)
    }

    /// Writes a planned batch: one statement for the mailbox counters, one per chunk of envelopes,
    /// one for the idempotency keys.
    async fn write_plan(conn: &mut SqliteConnection, plan: &Plan) -> Result<(), StoreError> {
        if !plan.keys.is_empty() {
            let rows: Vec<String> = plan
                .keys
                .iter()
                .map(|k| format!("[\"{}\",{},{}]", hex::encode(k.hash), k.server_ts, k.expires_at))
                .collect();
            sqlx::query(
                "INSERT INTO send_keys (key_hash, server_ts, expires_at) \
                 SELECT unhex(j.value ->> 0), j.value ->> 1, j.value ->> 2 FROM json_each(?1) AS j",
            )
            .bind(format!("[{}]", rows.join(",")))
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        }
        if plan.appends.is_empty() {
            return Ok(());
        }
        let bumped: Vec<String> =
            plan.bumped.iter().map(|(pk, (added, last))| format!("[{pk},{last},{added}]")).collect();
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
                    .bind(e.content.as_ref());
            }
            query.execute(&mut *conn).await.map_err(backend)?;
        }
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

    /// Lowers the mailbox counters for deleted envelopes (one mailbox pk per deleted envelope).
    async fn lower_counts(conn: &mut SqliteConnection, gone: &[i64]) -> Result<(), StoreError> {
        if gone.is_empty() {
            return Ok(());
        }
        let mut per_mailbox: HashMap<i64, i64> = HashMap::new();
        for pk in gone {
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
        Ok(())
    }

    async fn take_one_bundle(
        conn: &mut SqliteConnection,
        row: &sqlx::sqlite::SqliteRow,
        one_time: bool,
    ) -> Result<Bundle, StoreError> {
        let pk: i64 = row.get("pk");
        if !one_time {
            return Ok(bundle_from_row(row, None, None));
        }
        let prekey = sqlx::query(
            "DELETE FROM one_time_prekeys WHERE device_pk = ?1 AND key_id = \
             (SELECT key_id FROM one_time_prekeys WHERE device_pk = ?1 ORDER BY key_id LIMIT 1) \
             RETURNING key_id, public_key",
        )
        .bind(pk)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?
        .map(|r| OneTimeKey { id: to_u32(r.get(0)), public_key: r.get(1) });
        let kyber = sqlx::query(
            "DELETE FROM one_time_kyber_prekeys WHERE device_pk = ?1 AND key_id = \
             (SELECT key_id FROM one_time_kyber_prekeys WHERE device_pk = ?1 ORDER BY key_id LIMIT 1) \
             RETURNING key_id, public_key, signature",
        )
        .bind(pk)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?
        .map(|r| SignedKey { id: to_u32(r.get(0)), public_key: r.get(1), signature: r.get(2) });
        Ok(bundle_from_row(row, prekey, kyber))
    }
}

/// A bundle from a device row and the one-time keys taken (the last-resort Kyber key when none).
fn bundle_from_row(row: &sqlx::sqlite::SqliteRow, prekey: Option<OneTimeKey>, kyber: Option<SignedKey>) -> Bundle {
    let (kyber_prekey, kyber_last_resort) = match kyber {
        Some(k) => (k, false),
        None => (
            SignedKey {
                id: to_u32(row.get("kyber_lr_id")),
                public_key: row.get("kyber_lr"),
                signature: row.get("kyber_lr_sig"),
            },
            true,
        ),
    };
    Bundle {
        device_id: to_u32(row.get("device_id")),
        registration_id: to_u32(row.get("registration_id")),
        signed_prekey: SignedKey {
            id: to_u32(row.get("signed_prekey_id")),
            public_key: row.get("signed_prekey"),
            signature: row.get("signed_prekey_sig"),
        },
        kyber_prekey,
        kyber_last_resort,
        prekey,
    }
}

fn device_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Device, StoreError> {
    let account: Vec<u8> = row.get("account_id");
    let account = Uuid::from_slice(&account).map_err(backend)?;
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
    let id: Vec<u8> = row.get("id");
    Ok(Account {
        id: Uuid::from_slice(&id).map_err(backend)?,
        username: row.get("username"),
        identity_key: row.get("identity_key"),
    })
}

const DEVICE_COLUMNS: &str = "pk, account_id, device_id, registration_id, auth_key, name, created_at, last_seen";

/// Commits or rolls back depending on `result`.
async fn finish<T>(conn: &mut SqliteConnection, result: Result<T, StoreError>) -> Result<T, StoreError> {
    match result {
        Ok(v) => {
            sqlx::query("COMMIT").execute(&mut *conn).await.map_err(backend)?;
            Ok(v)
        }
        Err(e) => {
            // The original error matters more than a failed rollback.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

async fn begin(pool: &SqlitePool) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, StoreError> {
    let mut conn = pool.acquire().await.map_err(backend)?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.map_err(backend)?;
    Ok(conn)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, account: &NewAccount) -> Result<(), StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let inserted = sqlx::query(
                "INSERT INTO accounts (id, username, identity_key, created_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (username) DO NOTHING",
            )
            .bind(account.id.as_bytes().as_slice())
            .bind(&account.username)
            .bind(&account.identity_key)
            .bind(to_i64(account.device.created_at))
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::UsernameTaken);
            }
            Self::insert_device(&mut conn, account.id, 1, &account.device).await
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn add_device(&self, account: Uuid, device: &NewDeviceRecord, max_devices: u32) -> Result<u32, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            if !Self::account_exists(&mut conn, account).await? {
                return Err(StoreError::UnknownAccount);
            }
            let ids = Self::device_ids(&mut conn, account).await?;
            if ids.len() >= max_devices as usize {
                return Err(StoreError::TooManyDevices(max_devices));
            }
            let id = (2..=hush_wire::limits::MAX_DEVICE_ID)
                .find(|id| !ids.contains(id))
                .ok_or(StoreError::TooManyDevices(max_devices))?;
            Self::insert_device(&mut conn, account, id, device).await?;
            Ok(id)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn account(&self, id: Uuid) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT id, username, identity_key FROM accounts WHERE id = ?")
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT id, username, identity_key FROM accounts WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn devices(&self, account: Uuid) -> Result<Vec<Device>, StoreError> {
        let rows =
            sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE account_id = ? ORDER BY device_id"))
                .bind(account.as_bytes().as_slice())
                .fetch_all(&self.read)
                .await
                .map_err(backend)?;
        rows.iter().map(device_from_row).collect()
    }

    async fn device(&self, key: DeviceKey) -> Result<Option<Device>, StoreError> {
        let row = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE account_id = ? AND device_id = ?"))
            .bind(key.account.as_bytes().as_slice())
            .bind(key.device_id)
            .fetch_optional(&self.read)
            .await
            .map_err(backend)?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn devices_by_keys(&self, keys: &[DeviceKey]) -> Result<Vec<Option<Device>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = vec!["(?, ?)"; keys.len()].join(", ");
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE (account_id, device_id) IN (VALUES {values})");
        let mut query = sqlx::query(&sql);
        for key in keys {
            query = query.bind(key.account.as_bytes().to_vec()).bind(key.device_id);
        }
        let rows = query.fetch_all(&self.read).await.map_err(backend)?;
        let found = rows.iter().map(device_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(plan::align_devices(keys, found))
    }

    async fn remove_device(&self, key: DeviceKey) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM devices WHERE account_id = ? AND device_id = ?")
            .bind(key.account.as_bytes().as_slice())
            .bind(key.device_id)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_device(&self, key: DeviceKey, now_ms: u64) -> Result<(), StoreError> {
        let day = to_i64(day_floor(now_ms));
        sqlx::query(
            "UPDATE devices SET last_seen = ? WHERE account_id = ? AND device_id = ? \
             AND (last_seen IS NULL OR last_seen <> ?)",
        )
        .bind(day)
        .bind(key.account.as_bytes().as_slice())
        .bind(key.device_id)
        .bind(day)
        .execute(&self.write)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn upload_prekeys(&self, key: DeviceKey, upload: &PreKeyUploadRecord) -> Result<(), StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let pk = Self::device_pk(&mut conn, key).await?.ok_or(StoreError::UnknownDevice)?;
            Self::insert_prekeys(&mut conn, pk, upload).await
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn prekey_counts(&self, key: DeviceKey) -> Result<PreKeyCounts, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE device_pk = d.pk), \
                    (SELECT COUNT(*) FROM one_time_kyber_prekeys WHERE device_pk = d.pk) \
             FROM devices d WHERE d.account_id = ? AND d.device_id = ?",
        )
        .bind(key.account.as_bytes().as_slice())
        .bind(key.device_id)
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?
        .ok_or(StoreError::UnknownDevice)?;
        Ok(PreKeyCounts { ec: to_u32(row.get(0)), kyber: to_u32(row.get(1)) })
    }

    async fn take_bundles(
        &self,
        account: Uuid,
        device_id: Option<u32>,
        one_time: OneTimeAllowed<'_>,
    ) -> Result<Vec<Bundle>, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            if !Self::account_exists(&mut conn, account).await? {
                return Err(StoreError::UnknownAccount);
            }
            let rows = sqlx::query(
                "SELECT pk, device_id, registration_id, signed_prekey_id, signed_prekey, signed_prekey_sig, \
                 kyber_lr_id, kyber_lr, kyber_lr_sig FROM devices WHERE account_id = ?1 \
                 AND (?2 IS NULL OR device_id = ?2) ORDER BY device_id",
            )
            .bind(account.as_bytes().as_slice())
            .bind(device_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
            if rows.is_empty() {
                return Err(StoreError::UnknownDevice);
            }
            let mut bundles = Vec::with_capacity(rows.len());
            for row in &rows {
                let allowed = one_time(to_u32(row.get("device_id")));
                bundles.push(Self::take_one_bundle(&mut conn, row, allowed).await?);
            }
            Ok(bundles)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn check_devices(
        &self,
        sender: DeviceKey,
        recipients: &[RecipientBatch],
    ) -> Result<Result<Vec<DeviceKey>, SendRejection>, StoreError> {
        let mut conn = self.read.acquire().await.map_err(backend)?;
        let accounts: Vec<Uuid> = recipients.iter().map(|r| r.account).chain([sender.account]).collect();
        let sets = Self::load_sets(&mut conn, &accounts).await?;
        let checked = sets.check(sender, recipients, CheckMode::ONLINE_ONLY);
        Ok(checked.map(|targets| targets.into_iter().map(|(k, _, _)| k).collect()))
    }

    async fn commit_sends(&self, items: &[SendItem], max_mailbox: u64) -> Result<Vec<SendOutcome>, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let mut sets = Self::load_sets(&mut conn, &batch_accounts(items)).await?;
            let seen = Self::seen_keys(&mut conn, &batch_key_hashes(items)).await?;
            let plan = plan::plan(&mut sets, items, max_mailbox, &seen);
            Self::write_plan(&mut conn, &plan).await?;
            Ok(plan.outcomes)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn fetch(&self, mailbox: MailboxId, after_seq: u64, limit: u32) -> Result<Vec<StoredEnvelope>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, server_ts, kind, content FROM envelopes WHERE device_pk = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(mailbox.0)
        .bind(to_i64(after_seq))
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| StoredEnvelope {
                seq: to_u64(r.get(0)),
                server_ts: to_u64(r.get(1)),
                kind: r.get(2),
                content: Bytes::from(r.get::<Vec<u8>, _>(3)),
            })
            .collect())
    }

    async fn fetch_many(&self, reads: &[MailboxRead]) -> Result<Vec<Vec<StoredEnvelope>>, StoreError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        // One indexed range read per mailbox, tagged with its position, in one statement.
        let parts: Vec<String> = (0..reads.len())
            .map(|i| {
                format!(
                    "SELECT * FROM (SELECT {i} AS i, seq, server_ts, kind, content FROM envelopes \
                     WHERE device_pk = ? AND seq > ? ORDER BY seq LIMIT ?)"
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
            list.push(StoredEnvelope {
                seq: to_u64(r.get(1)),
                server_ts: to_u64(r.get(2)),
                kind: r.get(3),
                content: Bytes::from(r.get::<Vec<u8>, _>(4)),
            });
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
        let mut conn = begin(&self.write).await?;
        let result = async {
            let gone: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM envelopes WHERE (device_pk, seq) IN \
                 (SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?1) AS j) RETURNING device_pk",
            )
            .bind(format!("[{}]", pairs.join(",")))
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
            Self::lower_counts(&mut conn, &gone).await?;
            Ok(gone.len() as u64)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let gone: Vec<i64> = sqlx::query_scalar("DELETE FROM envelopes WHERE expires_at <= ? RETURNING device_pk")
                .bind(to_i64(now_ms))
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?;
            Self::lower_counts(&mut conn, &gone).await?;
            sqlx::query("DELETE FROM send_keys WHERE expires_at <= ?")
                .bind(to_i64(now_ms))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
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

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await.map_err(backend)?;
        Ok(())
    }

    async fn record_trust_root(&self, trust_root: &[u8]) -> Result<TrustRootCheck, StoreError> {
        let inserted =
            sqlx::query("INSERT INTO server_meta (name, value) VALUES ('trust_root', ?) ON CONFLICT (name) DO NOTHING")
                .bind(trust_root)
                .execute(&self.write)
                .await
                .map_err(backend)?;
        if inserted.rows_affected() > 0 {
            return Ok(TrustRootCheck::Recorded);
        }
        let recorded: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_meta WHERE name = 'trust_root'")
            .fetch_one(&self.write)
            .await
            .map_err(backend)?;
        Ok(if recorded == trust_root { TrustRootCheck::Matches } else { TrustRootCheck::Differs { recorded } })
    }
}
