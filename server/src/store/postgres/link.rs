//! [`LinkStore`] on Postgres.

use async_trait::async_trait;
use sqlx::Row;

use super::accounts::add_device_in;
use super::{PostgresStore, backend, to_i64, to_u64};
use crate::store::{LINK_TOKEN_KEEP_MS, LinkDevice, LinkError, LinkStore, NewLinkToken, StoreError};

#[async_trait]
impl LinkStore for PostgresStore {
    async fn create_link_token(&self, token: &NewLinkToken) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO link_tokens (token_hash, account_id, expires_at) VALUES ($1, $2::uuid, $3)")
            .bind(token.hash.as_slice())
            .bind(token.account.to_string())
            .bind(to_i64(token.expires_at))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn link_device(&self, link: &LinkDevice<'_>) -> Result<u32, LinkError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The token row is locked first: a concurrent use of the same token waits here and
        // then sees it used. (Lock order: link token, then the account as add_device takes it.)
        let row = sqlx::query(
            "SELECT expires_at, used_at FROM link_tokens WHERE token_hash = $1 AND account_id = $2::uuid FOR UPDATE",
        )
        .bind(link.token_hash.as_slice())
        .bind(link.account.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Err(LinkError::UnknownToken) };
        if row.try_get::<Option<i64>, _>("used_at").map_err(backend)?.is_some() {
            return Err(LinkError::UsedToken);
        }
        if to_u64(row.try_get("expires_at").map_err(backend)?) <= link.now_ms {
            return Err(LinkError::ExpiredToken);
        }
        let id = add_device_in(&mut tx, link.account, link.device, link.max_devices).await?;
        sqlx::query("UPDATE link_tokens SET used_at = $1 WHERE token_hash = $2")
            .bind(to_i64(link.now_ms))
            .bind(link.token_hash.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(id)
    }

    async fn open_channel(&self, address: &str, node: &str, expires_at: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO provisioning_channels (address, node_id, expires_at) VALUES ($1, $2, $3)")
            .bind(address)
            .bind(node)
            .bind(to_i64(expires_at))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn claim_channel(&self, address: &str, now_ms: u64) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("DELETE FROM provisioning_channels WHERE address = $1 AND expires_at > $2 RETURNING node_id")
            .bind(address)
            .bind(to_i64(now_ms))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn close_channel(&self, address: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM provisioning_channels WHERE address = $1")
            .bind(address)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn expire_links(&self, now_ms: u64) -> Result<u64, StoreError> {
        let channels = sqlx::query("DELETE FROM provisioning_channels WHERE expires_at <= $1")
            .bind(to_i64(now_ms))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        let tokens = sqlx::query("DELETE FROM link_tokens WHERE expires_at <= $1")
            .bind(to_i64(now_ms.saturating_sub(LINK_TOKEN_KEEP_MS)))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(channels.rows_affected() + tokens.rows_affected())
    }
}
