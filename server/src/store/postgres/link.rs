//! [`LinkStore`] on Postgres.

use async_trait::async_trait;
use sqlx::Row;

use super::accounts::add_device_in;
use super::{PostgresStore, backend, to_i64, to_u64};
use crate::store::{
    ArchiveError, ArchiveKey, LINK_TOKEN_KEEP_MS, LinkDevice, LinkError, LinkStore, NewArchive, NewLinkToken,
    StoreError,
};

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
        // Chunks go with their archive (ON DELETE CASCADE).
        let archives = sqlx::query("DELETE FROM link_archives WHERE expires_at <= $1")
            .bind(to_i64(now_ms))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(channels.rows_affected() + tokens.rows_affected() + archives.rows_affected())
    }

    async fn create_archive(&self, archive: &NewArchive) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO link_archives (id, account_id, max_bytes, expires_at) VALUES ($1, $2::uuid, $3, $4)")
            .bind(archive.id.as_slice())
            .bind(archive.account.to_string())
            .bind(to_i64(archive.max_bytes))
            .bind(to_i64(archive.expires_at))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn put_archive_chunk(
        &self,
        key: ArchiveKey,
        index: u32,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<(), ArchiveError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The archive row is locked: concurrent chunk uploads add up their sizes one at a time.
        let row = sqlx::query(
            "SELECT max_bytes, total_bytes, chunks FROM link_archives \
             WHERE id = $1 AND account_id = $2::uuid AND expires_at > $3 FOR UPDATE",
        )
        .bind(key.id.as_slice())
        .bind(key.account.to_string())
        .bind(to_i64(now_ms))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Err(ArchiveError::Unknown) };
        if row.try_get::<Option<i64>, _>("chunks").map_err(backend)?.is_some() {
            return Err(ArchiveError::Complete);
        }
        let old: Option<i32> =
            sqlx::query_scalar("SELECT length(bytes) FROM link_archive_chunks WHERE archive_id = $1 AND idx = $2")
                .bind(key.id.as_slice())
                .bind(i64::from(index))
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let old = u64::try_from(old.unwrap_or(0)).unwrap_or(0);
        let total = to_u64(row.try_get("total_bytes").map_err(backend)?) - old + bytes.len() as u64;
        if total > to_u64(row.try_get("max_bytes").map_err(backend)?) {
            return Err(ArchiveError::TooLarge);
        }
        sqlx::query(
            "INSERT INTO link_archive_chunks (archive_id, idx, bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (archive_id, idx) DO UPDATE SET bytes = excluded.bytes",
        )
        .bind(key.id.as_slice())
        .bind(i64::from(index))
        .bind(bytes)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("UPDATE link_archives SET total_bytes = $1 WHERE id = $2")
            .bind(to_i64(total))
            .bind(key.id.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn complete_archive(&self, key: ArchiveKey, chunks: u32, now_ms: u64) -> Result<(), ArchiveError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "SELECT chunks FROM link_archives WHERE id = $1 AND account_id = $2::uuid AND expires_at > $3 FOR UPDATE",
        )
        .bind(key.id.as_slice())
        .bind(key.account.to_string())
        .bind(to_i64(now_ms))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Err(ArchiveError::Unknown) };
        if row.try_get::<Option<i64>, _>("chunks").map_err(backend)?.is_some() {
            return Err(ArchiveError::Complete);
        }
        let (count, max): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MAX(idx) FROM link_archive_chunks WHERE archive_id = $1")
                .bind(key.id.as_slice())
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        // Indexes are unique, so `count` chunks all below `chunks` are exactly 0..chunks.
        if to_u64(count) != u64::from(chunks) || max.is_some_and(|m| to_u64(m) >= u64::from(chunks)) {
            return Err(ArchiveError::Incomplete);
        }
        sqlx::query("UPDATE link_archives SET chunks = $1 WHERE id = $2")
            .bind(i64::from(chunks))
            .bind(key.id.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn archive_chunk(&self, key: ArchiveKey, index: u32, now_ms: u64) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar(
            "SELECT c.bytes FROM link_archive_chunks c JOIN link_archives a ON a.id = c.archive_id \
             WHERE a.id = $1 AND a.account_id = $2::uuid AND a.expires_at > $3 AND a.chunks IS NOT NULL \
             AND c.idx = $4",
        )
        .bind(key.id.as_slice())
        .bind(key.account.to_string())
        .bind(to_i64(now_ms))
        .bind(i64::from(index))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)
    }

    async fn delete_archive(&self, key: ArchiveKey) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM link_archives WHERE id = $1 AND account_id = $2::uuid")
            .bind(key.id.as_slice())
            .bind(key.account.to_string())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}
