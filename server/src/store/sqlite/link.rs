//! [`LinkStore`] on SQLite.

use async_trait::async_trait;
use sqlx::Row;

use super::accounts::add_device_in;
use super::{SqliteStore, backend, begin, finish, to_i64, to_u64};
use crate::store::{LINK_TOKEN_KEEP_MS, LinkDevice, LinkError, LinkStore, NewLinkToken, StoreError};

#[async_trait]
impl LinkStore for SqliteStore {
    async fn create_link_token(&self, token: &NewLinkToken) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO link_tokens (token_hash, account_id, expires_at) VALUES (?, ?, ?)")
            .bind(token.hash.as_slice())
            .bind(token.account.as_bytes().as_slice())
            .bind(to_i64(token.expires_at))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn link_device(&self, link: &LinkDevice<'_>) -> Result<u32, LinkError> {
        // One write connection: the transaction runs alone, so of two uses one sees the other's mark.
        let mut conn = begin(&self.write).await?;
        let result = async {
            let row =
                sqlx::query("SELECT expires_at, used_at FROM link_tokens WHERE token_hash = ? AND account_id = ?")
                    .bind(link.token_hash.as_slice())
                    .bind(link.account.as_bytes().as_slice())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?;
            let Some(row) = row else { return Err(LinkError::UnknownToken) };
            if row.try_get::<Option<i64>, _>("used_at").map_err(backend)?.is_some() {
                return Err(LinkError::UsedToken);
            }
            if to_u64(row.try_get("expires_at").map_err(backend)?) <= link.now_ms {
                return Err(LinkError::ExpiredToken);
            }
            let id = add_device_in(&mut conn, link.account, link.device, link.max_devices).await?;
            sqlx::query("UPDATE link_tokens SET used_at = ? WHERE token_hash = ?")
                .bind(to_i64(link.now_ms))
                .bind(link.token_hash.as_slice())
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            Ok(id)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn open_channel(&self, address: &str, node: &str, expires_at: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO provisioning_channels (address, node_id, expires_at) VALUES (?, ?, ?)")
            .bind(address)
            .bind(node)
            .bind(to_i64(expires_at))
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn claim_channel(&self, address: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("DELETE FROM provisioning_channels WHERE address = ? AND expires_at > ? RETURNING node_id")
            .bind(address)
            .bind(to_i64(now_ms))
            .fetch_optional(&self.write)
            .await
            .map_err(backend)
    }

    async fn close_channel(&self, address: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM provisioning_channels WHERE address = ?")
            .bind(address)
            .execute(&self.write)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn expire_links(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let channels = sqlx::query("DELETE FROM provisioning_channels WHERE expires_at <= ?")
                .bind(to_i64(now_ms))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            let tokens = sqlx::query("DELETE FROM link_tokens WHERE expires_at <= ?")
                .bind(to_i64(now_ms.saturating_sub(LINK_TOKEN_KEEP_MS)))
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            Ok(channels.rows_affected() + tokens.rows_affected())
        }
        .await;
        finish(&mut conn, result).await
    }
}
