//! [`PushStore`] on Postgres.

use async_trait::async_trait;
use sqlx::Row;

use super::{PostgresStore, backend, device_param};
use crate::store::{DeviceKey, PushRecord, PushStore, PushTarget, StoreError};

const DEVICE: &str = "(SELECT pk FROM devices WHERE account_id = $1::uuid AND device_id = $2)";

#[async_trait]
impl PushStore for PostgresStore {
    async fn set_push_target(&self, key: DeviceKey, target: &PushTarget, now_ms: u64) -> Result<(), StoreError> {
        let (provider, token, topic, sandbox) = target.columns();
        let done = sqlx::query(
            "INSERT INTO push_targets (device_pk, provider, token, topic, sandbox, updated_at) \
             SELECT pk, $3, $4, $5, $6, $7 FROM devices WHERE account_id = $1::uuid AND device_id = $2 \
             ON CONFLICT (device_pk) DO UPDATE SET provider = EXCLUDED.provider, token = EXCLUDED.token, \
             topic = EXCLUDED.topic, sandbox = EXCLUDED.sandbox, updated_at = EXCLUDED.updated_at",
        )
        .bind(key.account.to_string())
        .bind(device_param(key.device_id))
        .bind(provider)
        .bind(token)
        .bind(topic)
        .bind(sandbox)
        .bind(i64::try_from(now_ms).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownDevice);
        }
        Ok(())
    }

    async fn push_target(&self, key: DeviceKey) -> Result<Option<PushRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT provider, token, topic, sandbox, updated_at FROM push_targets WHERE device_pk = {DEVICE}"
        ))
        .bind(key.account.to_string())
        .bind(device_param(key.device_id))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let target = PushTarget::from_columns(
            row.try_get::<&str, _>("provider").map_err(backend)?,
            row.try_get("token").map_err(backend)?,
            row.try_get("topic").map_err(backend)?,
            row.try_get("sandbox").map_err(backend)?,
        )?;
        let updated_at: i64 = row.try_get("updated_at").map_err(backend)?;
        Ok(Some(PushRecord { target, updated_at: u64::try_from(updated_at).unwrap_or(0) }))
    }

    async fn remove_push_target(&self, key: DeviceKey, only: Option<&PushTarget>) -> Result<bool, StoreError> {
        let done = match only.map(PushTarget::columns) {
            None => {
                sqlx::query(&format!("DELETE FROM push_targets WHERE device_pk = {DEVICE}"))
                    .bind(key.account.to_string())
                    .bind(device_param(key.device_id))
                    .execute(&self.pool)
                    .await
            }
            Some((provider, token, topic, sandbox)) => {
                sqlx::query(&format!(
                    "DELETE FROM push_targets WHERE device_pk = {DEVICE} AND provider = $3 AND token = $4 \
                     AND topic IS NOT DISTINCT FROM $5 AND sandbox = $6"
                ))
                .bind(key.account.to_string())
                .bind(device_param(key.device_id))
                .bind(provider)
                .bind(token)
                .bind(topic)
                .bind(sandbox)
                .execute(&self.pool)
                .await
            }
        }
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}
