-- Idempotency keys of stored sends (`SendRequest.idempotency_key`), kept 24 hours, so a
-- resend is answered with the first send's result instead of being stored again. The key
-- is hashed together with the sending device: no row names its sender.
CREATE TABLE send_keys (
    key_hash   BLOB PRIMARY KEY,   -- SHA-256 over the sending device and the client's key
    server_ts  INTEGER NOT NULL,   -- the first send's server timestamp (its answer)
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX send_keys_expiry ON send_keys (expires_at);

-- Facts about the deployment that every node must agree on (`trust_root`: the public key
-- sealed-sender certificates chain to, recorded by the first node that started).
CREATE TABLE server_meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
