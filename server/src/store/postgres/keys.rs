//! [`KeyStore`] on Postgres: prekeys and bundles.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;

use super::{PostgresStore, account_exists, backend, device_param, device_pk, get, get_device_id, get_signed, get_u32};
use crate::store::{
    Bundle, DeviceKey, KeyStore, OneTimeAllowed, OneTimeKey, PreKeyCounts, PreKeyUploadRecord, SignedKey, StoreError,
};

async fn replace_signed_keys(conn: &mut PgConnection, pk: i64, upload: &PreKeyUploadRecord) -> Result<(), StoreError> {
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
pub(super) async fn insert_one_time_keys(
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

#[async_trait]
impl KeyStore for PostgresStore {
    async fn upload_prekeys(&self, key: DeviceKey, upload: &PreKeyUploadRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let pk = device_pk(&mut tx, key).await?.ok_or(StoreError::UnknownDevice)?;
        replace_signed_keys(&mut tx, pk, upload).await?;
        insert_one_time_keys(&mut tx, pk, &upload.one_time_prekeys, &upload.one_time_kyber_prekeys).await?;
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
        if !account_exists(&mut tx, account).await? {
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
            bundles.push(take_one_bundle(&mut tx, row, allowed).await?);
        }
        tx.commit().await.map_err(backend)?;
        Ok(bundles)
    }
}
