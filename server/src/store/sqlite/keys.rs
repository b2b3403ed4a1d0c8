//! [`KeyStore`] on SQLite: prekeys and bundles.

use async_trait::async_trait;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::{SqliteStore, account_exists, backend, begin, finish, to_u32};
use crate::store::{
    Bundle, DeviceKey, KeyStore, OneTimeAllowed, OneTimeKey, PreKeyCounts, PreKeyUploadRecord, SignedKey, StoreError,
};

/// Adds one-time prekeys and replaces signed ones of the device `pk`.
pub(super) async fn insert_prekeys(
    conn: &mut SqliteConnection,
    pk: i64,
    upload: &PreKeyUploadRecord,
) -> Result<(), StoreError> {
    if let Some(k) = &upload.signed_prekey {
        sqlx::query("UPDATE devices SET signed_prekey_id = ?, signed_prekey = ?, signed_prekey_sig = ? WHERE pk = ?")
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

#[async_trait]
impl KeyStore for SqliteStore {
    async fn upload_prekeys(&self, key: DeviceKey, upload: &PreKeyUploadRecord) -> Result<(), StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let pk = super::accounts::device_pk(&mut conn, key).await?.ok_or(StoreError::UnknownDevice)?;
            insert_prekeys(&mut conn, pk, upload).await
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
            if !account_exists(&mut conn, account).await? {
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
                bundles.push(take_one_bundle(&mut conn, row, allowed).await?);
            }
            Ok(bundles)
        }
        .await;
        finish(&mut conn, result).await
    }
}
