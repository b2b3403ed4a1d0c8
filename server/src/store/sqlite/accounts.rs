//! [`AccountStore`] on SQLite: accounts, devices, deployment facts.

use async_trait::async_trait;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::keys::insert_prekeys;
use super::{
    DEVICE_COLUMNS, SqliteStore, account_exists, account_from_row, backend, begin, device_from_row, drop_group_refs,
    finish, gone_from_row, to_i64, to_u32,
};
use crate::store::plan;
use crate::store::{
    Account, AccountStore, Device, DeviceKey, GroupPosition, NewAccount, NewDeviceRecord, PreKeyUploadRecord,
    StoreError, TrustRootCheck, day_floor,
};

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
    // A new device of a member reads each stream-read group from now on, as it would get
    // references to what is sent from now on in a smaller group.
    sqlx::query(
        "INSERT INTO group_cursors (device_pk, group_id, acked_seq) \
         SELECT ?, g.id, g.seq FROM group_members m JOIN chat_groups g ON g.id = m.group_id \
         WHERE m.account_id = ? AND g.read_path = 1",
    )
    .bind(pk)
    .bind(account.as_bytes().as_slice())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    let upload = PreKeyUploadRecord {
        signed_prekey: None,
        kyber_last_resort: None,
        one_time_prekeys: device.one_time_prekeys.clone(),
        one_time_kyber_prekeys: device.one_time_kyber_prekeys.clone(),
    };
    insert_prekeys(conn, pk, &upload).await
}

pub(super) async fn device_pk(conn: &mut SqliteConnection, key: DeviceKey) -> Result<Option<i64>, StoreError> {
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

/// Adds a device with the lowest free id inside the caller's transaction.
pub(super) async fn add_device_in(
    conn: &mut SqliteConnection,
    account: Uuid,
    device: &NewDeviceRecord,
    max_devices: u32,
) -> Result<u32, StoreError> {
    if !account_exists(conn, account).await? {
        return Err(StoreError::UnknownAccount);
    }
    let ids = device_ids(conn, account).await?;
    if ids.len() >= max_devices as usize {
        return Err(StoreError::TooManyDevices(max_devices));
    }
    let id = (2..=hush_wire::limits::MAX_DEVICE_ID)
        .find(|id| !ids.contains(id))
        .ok_or(StoreError::TooManyDevices(max_devices))?;
    insert_device(conn, account, id, device).await?;
    Ok(id)
}

#[async_trait]
impl AccountStore for SqliteStore {
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
            insert_device(&mut conn, account.id, 1, &account.device).await
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn add_device(&self, account: Uuid, device: &NewDeviceRecord, max_devices: u32) -> Result<u32, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = add_device_in(&mut conn, account, device, max_devices).await;
        finish(&mut conn, result).await
    }

    async fn rename_device(&self, key: DeviceKey, name: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE devices SET name = ? WHERE account_id = ? AND device_id = ?")
            .bind(name)
            .bind(key.account.as_bytes().as_slice())
            .bind(key.device_id)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
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
        let mut conn = begin(&self.write).await?;
        let result = async {
            let Some(pk) = device_pk(&mut conn, key).await? else { return Ok(false) };
            // Its group references go with its mailbox: the messages lose one reference each.
            let refs = sqlx::query(
                "SELECT device_pk, group_id, group_seq FROM envelopes WHERE device_pk = ? AND group_id IS NOT NULL",
            )
            .bind(pk)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
            let refs: Vec<GroupPosition> = refs
                .iter()
                .map(gone_from_row)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter_map(|(_, g)| g)
                .collect();
            drop_group_refs(&mut conn, &refs).await?;
            // Its account's groups rotate: every sender key must be made anew.
            let groups = "SELECT group_id FROM group_members WHERE account_id = ?";
            sqlx::query(&format!("DELETE FROM group_distributions WHERE group_id IN ({groups})"))
                .bind(key.account.as_bytes().as_slice())
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            sqlx::query(&format!("UPDATE chat_groups SET epoch = epoch + 1 WHERE id IN ({groups})"))
                .bind(key.account.as_bytes().as_slice())
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            sqlx::query("DELETE FROM devices WHERE pk = ?").bind(pk).execute(&mut *conn).await.map_err(backend)?;
            Ok(true)
        }
        .await;
        finish(&mut conn, result).await
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
