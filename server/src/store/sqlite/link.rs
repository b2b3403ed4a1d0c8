//! [`LinkStore`] on SQLite.

use async_trait::async_trait;
use sqlx::{Row, SqliteConnection};

use super::accounts::add_device_in;
use super::{SqliteStore, backend, begin, finish, to_i64, to_u64};
use crate::store::{
    ArchiveError, ArchiveKey, LINK_TOKEN_KEEP_MS, LinkDevice, LinkError, LinkStore, NewArchive, NewLinkToken,
    StoreError,
};

type Wiped<'c, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

/// Runs `delete` with `secure_delete` on, so the freed pages of archive bytes are zeroed
/// rather than left in the file, then checkpoints the WAL and truncates it (best effort: a
/// reader still holding old pages makes the checkpoint partial; the next one finishes it).
/// Only archive deletions pay for this; envelopes keep SQLite's default.
async fn wiping<T>(
    conn: &mut SqliteConnection,
    delete: impl for<'c> FnOnce(&'c mut SqliteConnection) -> Wiped<'c, T>,
) -> Result<T, StoreError> {
    sqlx::query("PRAGMA secure_delete = ON").execute(&mut *conn).await.map_err(backend)?;
    let result = delete(&mut *conn).await;
    let off = sqlx::query("PRAGMA secure_delete = OFF").execute(&mut *conn).await.map_err(backend);
    let value = result?;
    off?;
    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *conn).await {
        tracing::warn!(error = %e, "checkpointing after deleting an archive failed");
    }
    Ok(value)
}

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
        let links = finish(&mut conn, result).await?;
        drop(conn);
        let mut conn = self.write.acquire().await.map_err(backend)?;
        let archives = wiping(&mut conn, |conn| {
            Box::pin(async move {
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.map_err(backend)?;
                let result = async {
                    sqlx::query(
                        "DELETE FROM link_archive_chunks WHERE archive_id IN \
                         (SELECT id FROM link_archives WHERE expires_at <= ?)",
                    )
                    .bind(to_i64(now_ms))
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
                    let archives = sqlx::query("DELETE FROM link_archives WHERE expires_at <= ?")
                        .bind(to_i64(now_ms))
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                    Ok(archives.rows_affected())
                }
                .await;
                finish(conn, result).await
            })
        })
        .await?;
        Ok(links + archives)
    }

    async fn create_archive(&self, archive: &NewArchive) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO link_archives (id, account_id, max_bytes, expires_at) VALUES (?, ?, ?, ?)")
            .bind(archive.id.as_slice())
            .bind(archive.account.as_bytes().as_slice())
            .bind(to_i64(archive.max_bytes))
            .bind(to_i64(archive.expires_at))
            .execute(&self.write)
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
        let mut conn = begin(&self.write).await?;
        let result = async {
            let row = sqlx::query(
                "SELECT max_bytes, total_bytes, chunks FROM link_archives \
                 WHERE id = ? AND account_id = ? AND expires_at > ?",
            )
            .bind(key.id.as_slice())
            .bind(key.account.as_bytes().as_slice())
            .bind(to_i64(now_ms))
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
            let Some(row) = row else { return Err(ArchiveError::Unknown) };
            if row.try_get::<Option<i64>, _>("chunks").map_err(backend)?.is_some() {
                return Err(ArchiveError::Complete);
            }
            let old: Option<i64> =
                sqlx::query_scalar("SELECT length(bytes) FROM link_archive_chunks WHERE archive_id = ? AND idx = ?")
                    .bind(key.id.as_slice())
                    .bind(index)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?;
            let total =
                to_u64(row.try_get("total_bytes").map_err(backend)?) - to_u64(old.unwrap_or(0)) + bytes.len() as u64;
            if total > to_u64(row.try_get("max_bytes").map_err(backend)?) {
                return Err(ArchiveError::TooLarge);
            }
            sqlx::query(
                "INSERT INTO link_archive_chunks (archive_id, idx, bytes) VALUES (?, ?, ?) \
                 ON CONFLICT (archive_id, idx) DO UPDATE SET bytes = excluded.bytes",
            )
            .bind(key.id.as_slice())
            .bind(index)
            .bind(bytes)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
            sqlx::query("UPDATE link_archives SET total_bytes = ? WHERE id = ?")
                .bind(to_i64(total))
                .bind(key.id.as_slice())
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            Ok(())
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn complete_archive(&self, key: ArchiveKey, chunks: u32, now_ms: u64) -> Result<(), ArchiveError> {
        let mut conn = begin(&self.write).await?;
        let result = async {
            let row =
                sqlx::query("SELECT chunks FROM link_archives WHERE id = ? AND account_id = ? AND expires_at > ?")
                    .bind(key.id.as_slice())
                    .bind(key.account.as_bytes().as_slice())
                    .bind(to_i64(now_ms))
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(backend)?;
            let Some(row) = row else { return Err(ArchiveError::Unknown) };
            if row.try_get::<Option<i64>, _>("chunks").map_err(backend)?.is_some() {
                return Err(ArchiveError::Complete);
            }
            let (count, max): (i64, Option<i64>) =
                sqlx::query_as("SELECT COUNT(*), MAX(idx) FROM link_archive_chunks WHERE archive_id = ?")
                    .bind(key.id.as_slice())
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(backend)?;
            // Indexes are unique, so `count` chunks all below `chunks` are exactly 0..chunks.
            if to_u64(count) != u64::from(chunks) || max.is_some_and(|m| to_u64(m) >= u64::from(chunks)) {
                return Err(ArchiveError::Incomplete);
            }
            sqlx::query("UPDATE link_archives SET chunks = ? WHERE id = ?")
                .bind(chunks)
                .bind(key.id.as_slice())
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            Ok(())
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn archive_chunk(&self, key: ArchiveKey, index: u32, now_ms: u64) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar(
            "SELECT c.bytes FROM link_archive_chunks c JOIN link_archives a ON a.id = c.archive_id \
             WHERE a.id = ? AND a.account_id = ? AND a.expires_at > ? AND a.chunks IS NOT NULL AND c.idx = ?",
        )
        .bind(key.id.as_slice())
        .bind(key.account.as_bytes().as_slice())
        .bind(to_i64(now_ms))
        .bind(index)
        .fetch_optional(&self.read)
        .await
        .map_err(backend)
    }

    async fn delete_archive(&self, key: ArchiveKey) -> Result<bool, StoreError> {
        let mut conn = self.write.acquire().await.map_err(backend)?;
        let deleted = wiping(&mut conn, |conn| {
            Box::pin(async move {
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.map_err(backend)?;
                let result = async {
                    let found: Option<i64> =
                        sqlx::query_scalar("SELECT 1 FROM link_archives WHERE id = ? AND account_id = ?")
                            .bind(key.id.as_slice())
                            .bind(key.account.as_bytes().as_slice())
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(backend)?;
                    if found.is_none() {
                        return Ok(false);
                    }
                    sqlx::query("DELETE FROM link_archive_chunks WHERE archive_id = ?")
                        .bind(key.id.as_slice())
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                    sqlx::query("DELETE FROM link_archives WHERE id = ?")
                        .bind(key.id.as_slice())
                        .execute(&mut *conn)
                        .await
                        .map_err(backend)?;
                    Ok(true)
                }
                .await;
                finish(conn, result).await
            })
        })
        .await?;
        Ok(deleted)
    }
}
