//! [`PushStore`] on SQLite.

use async_trait::async_trait;
use sqlx::Row;

use super::accounts::device_pk;
use super::{SqliteStore, backend, begin, finish, to_i64, to_u64};
use crate::store::{DeviceKey, PushRecord, PushStore, PushTarget, StoreError};

#[async_trait]
impl PushStore for SqliteStore {
    async fn set_push_target(&self, key: DeviceKey, target: &PushTarget, now_ms: u64) -> Result<(), StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let pk = device_pk(&mut conn, key).await?.ok_or(StoreError::UnknownDevice)?;
            let (provider, token, topic, sandbox) = target.columns();
            sqlx::query(
                "INSERT INTO push_targets (device_pk, provider, token, topic, sandbox, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_pk) DO UPDATE SET provider = excluded.provider, \
                 token = excluded.token, topic = excluded.topic, sandbox = excluded.sandbox, \
                 updated_at = excluded.updated_at",
            )
            .bind(pk)
            .bind(provider)
            .bind(token)
            .bind(topic)
            .bind(sandbox)
            .bind(to_i64(now_ms))
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
            Ok(())
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn push_target(&self, key: DeviceKey) -> Result<Option<PushRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT p.provider, p.token, p.topic, p.sandbox, p.updated_at FROM push_targets p \
             JOIN devices d ON d.pk = p.device_pk WHERE d.account_id = ? AND d.device_id = ?",
        )
        .bind(key.account.as_bytes().as_slice())
        .bind(key.device_id)
        .fetch_optional(&self.read)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let target = PushTarget::from_columns(
            row.try_get::<&str, _>("provider").map_err(backend)?,
            row.try_get("token").map_err(backend)?,
            row.try_get("topic").map_err(backend)?,
            row.try_get("sandbox").map_err(backend)?,
        )?;
        Ok(Some(PushRecord { target, updated_at: to_u64(row.try_get("updated_at").map_err(backend)?) }))
    }

    async fn remove_push_target(&self, key: DeviceKey, only: Option<&PushTarget>) -> Result<bool, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let Some(pk) = device_pk(&mut conn, key).await? else { return Ok(false) };
            let done = match only.map(PushTarget::columns) {
                None => sqlx::query("DELETE FROM push_targets WHERE device_pk = ?").bind(pk).execute(&mut *conn).await,
                Some((provider, token, topic, sandbox)) => {
                    sqlx::query(
                        "DELETE FROM push_targets WHERE device_pk = ? AND provider = ? AND token = ? \
                         AND topic IS ? AND sandbox = ?",
                    )
                    .bind(pk)
                    .bind(provider)
                    .bind(token)
                    .bind(topic)
                    .bind(sandbox)
                    .execute(&mut *conn)
                    .await
                }
            }
            .map_err(backend)?;
            Ok(done.rows_affected() > 0)
        }
        .await;
        finish(&mut conn, result).await
    }
}
