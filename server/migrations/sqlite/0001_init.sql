-- hushd schema, SQLite. Ciphertext and the minimum of metadata: no envelope names its sender.

CREATE TABLE accounts (
    id           BLOB PRIMARY KEY,        -- 16-byte UUID (ACI)
    username     TEXT NOT NULL UNIQUE,    -- normalized lowercase handle
    identity_key BLOB NOT NULL,           -- 33-byte libsignal identity public key
    created_at   INTEGER NOT NULL
);

CREATE TABLE devices (
    pk               INTEGER PRIMARY KEY AUTOINCREMENT, -- mailbox id, never reused
    account_id       BLOB NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_id        INTEGER NOT NULL,
    registration_id  INTEGER NOT NULL,
    auth_key         BLOB NOT NULL,          -- ed25519 public key
    name             TEXT,
    created_at       INTEGER NOT NULL,
    last_seen        INTEGER,                -- day precision
    last_seq         INTEGER NOT NULL DEFAULT 0,
    mailbox_count    INTEGER NOT NULL DEFAULT 0,
    signed_prekey_id INTEGER NOT NULL,
    signed_prekey    BLOB NOT NULL,
    signed_prekey_sig BLOB NOT NULL,
    kyber_lr_id      INTEGER NOT NULL,
    kyber_lr         BLOB NOT NULL,
    kyber_lr_sig     BLOB NOT NULL,
    UNIQUE (account_id, device_id)
);

CREATE TABLE one_time_prekeys (
    device_pk  INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    PRIMARY KEY (device_pk, key_id)
);

CREATE TABLE one_time_kyber_prekeys (
    device_pk  INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    signature  BLOB NOT NULL,
    PRIMARY KEY (device_pk, key_id)
);

CREATE TABLE envelopes (
    device_pk  INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    server_ts  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    content    BLOB NOT NULL,
    PRIMARY KEY (device_pk, seq)
);

CREATE INDEX envelopes_expiry ON envelopes (expires_at);
