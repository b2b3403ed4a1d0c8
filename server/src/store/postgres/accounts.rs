//! [`AccountStore`] on Postgres: accounts, devices, deployment facts.

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::keys::insert_one_time_keys;
use super::{
    DEVICE_COLUMNS, GONE_COLUMNS, PostgresStore, account_from_row, backend, device_from_row, device_param, device_pk,
    drop_group_refs, gone_from_row, lock_devices, to_i64,
};
use crate::store::plan;
use crate::store::{
    Account, AccountStore, Device, DeviceKey, GroupPosition, NewAccount, NewDeviceRecord, StoreError, TrustRootCheck,
    day_floor,
};

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
    // A new device of a member reads each stream-read group from now on, as it would get
    // references to what is sent from now on in a smaller group.
    sqlx::query(
        "INSERT INTO group_cursors (device_pk, group_id, acked_seq) \
         SELECT $1, g.id, g.seq FROM group_members m JOIN chat_groups g ON g.id = m.group_id \
         WHERE m.account_id = $2::uuid AND g.read_path",
    )
    .bind(pk)
    .bind(account.to_string())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    insert_one_time_keys(conn, pk, &device.one_time_prekeys, &device.one_time_kyber_prekeys).await
}

/// Adds a device with the lowest free id inside the caller's transaction.
pub(super) async fn add_device_in(
    conn: &mut PgConnection,
    account: Uuid,
    device: &NewDeviceRecord,
    max_devices: u32,
) -> Result<u32, StoreError> {
    // Locking the account serializes device changes of one account across nodes.
    let locked = sqlx::query("SELECT 1 FROM accounts WHERE id = $1::uuid FOR UPDATE")
        .bind(account.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    if locked.is_none() {
        return Err(StoreError::UnknownAccount);
    }
    let taken: Vec<i32> = sqlx::query_scalar("SELECT device_id FROM devices WHERE account_id = $1::uuid")
        .bind(account.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    if taken.len() >= max_devices as usize {
        return Err(StoreError::TooManyDevices(max_devices));
    }
    let id = (2..=hush_wire::limits::MAX_DEVICE_ID)
        .find(|&id| !taken.contains(&device_param(id)))
        .ok_or(StoreError::TooManyDevices(max_devices))?;
    insert_device(conn, account, id, device).await?;
    Ok(id)
}

#[async_trait]
impl AccountStore for PostgresStore {
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
        insert_device(&mut tx, account.id, 1, &account.device).await?;
        tx.commit().await.map_err(backend)
    }

    async fn add_device(&self, account: Uuid, device: &NewDeviceRecord, max_devices: u32) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let id = add_device_in(&mut tx, account, device, max_devices).await?;
        tx.commit().await.map_err(backend)?;
        Ok(id)
    }

    async fn rename_device(&self, key: DeviceKey, name: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE devices SET name = $1 WHERE account_id = $2::uuid AND device_id = $3")
            .bind(name)
            .bind(key.account.to_string())
            .bind(device_param(key.device_id))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Lock order: the account's groups, then the device row, then group messages.
        let groups: Vec<String> = sqlx::query_scalar(
            "SELECT g.id::text FROM chat_groups g JOIN group_members m ON m.group_id = g.id \
             WHERE m.account_id = $1::uuid ORDER BY g.id FOR UPDATE OF g",
        )
        .bind(key.account.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(pk) = device_pk(&mut tx, key).await? else { return Ok(false) };
        lock_devices(&mut tx, &[pk]).await?;
        // Its group references go with its mailbox: the messages lose one reference each.
        let refs =
            sqlx::query(&format!("SELECT {GONE_COLUMNS} FROM envelopes WHERE device_pk = $1 AND group_id IS NOT NULL"))
                .bind(pk)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let refs: Vec<GroupPosition> =
            refs.iter().map(gone_from_row).collect::<Result<Vec<_>, _>>()?.into_iter().filter_map(|(_, g)| g).collect();
        drop_group_refs(&mut tx, &refs).await?;
        // Its account's groups rotate: every sender key must be made anew.
        sqlx::query("DELETE FROM group_distributions WHERE group_id = ANY($1::text[]::uuid[])")
            .bind(&groups)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("UPDATE chat_groups SET epoch = epoch + 1 WHERE id = ANY($1::text[]::uuid[])")
            .bind(&groups)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        // Its prekeys and envelopes go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM devices WHERE pk = $1").bind(pk).execute(&mut *tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
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
