-- History archives for a newly linked device: client-encrypted bytes uploaded in chunks by
-- the primary device and fetched by a device of the same account once complete; deleted on
-- request or at expiry. `chunks` is NULL until the upload is complete.
CREATE TABLE link_archives (
    id          BLOB PRIMARY KEY,
    account_id  BLOB NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    max_bytes   INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL DEFAULT 0,
    chunks      INTEGER,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX link_archives_expires_at ON link_archives (expires_at);

CREATE TABLE link_archive_chunks (
    archive_id BLOB NOT NULL REFERENCES link_archives(id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    bytes      BLOB NOT NULL,
    PRIMARY KEY (archive_id, idx)
);
