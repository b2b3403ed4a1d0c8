-- hushd schema, PostgreSQL. Mirrors migrations/sqlite/0001_init.sql: ciphertext and the
-- minimum of metadata; no envelope row names its sender.
--
-- Several hushd nodes share this database. The code that writes it keeps these rules:
--   * a transaction that changes the rows of several devices locks them first, in `pk` order
--     (no lock cycles between nodes);
--   * `devices.last_seq` is only bumped under that row lock, so a mailbox's seqs strictly
--     increase and become visible in order;
--   * `devices.mailbox_count` always equals the number of `envelopes` rows of the device.
-- Times are milliseconds since the Unix epoch. Unsigned 32-bit values (key ids,
-- registration ids) are kept in BIGINT, since INTEGER is signed.

-- An account: a random UUID (the ACI) named by a unique handle.
CREATE TABLE accounts (
    id           UUID PRIMARY KEY,        -- the ACI
    username     TEXT NOT NULL UNIQUE,    -- normalized lowercase handle
    identity_key BYTEA NOT NULL,          -- 33-byte libsignal identity public key
    created_at   BIGINT NOT NULL
);

-- A device of an account. Its `pk` names its mailbox and is never reused, even when
-- a later device of the account takes the same `device_id`.
CREATE TABLE devices (
    pk                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- mailbox id
    account_id        UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_id         INTEGER NOT NULL,          -- 1..=127
    registration_id   BIGINT NOT NULL,           -- libsignal registration id
    auth_key          BYTEA NOT NULL,            -- ed25519 public key
    name              TEXT,
    created_at        BIGINT NOT NULL,
    last_seen         BIGINT,                    -- day precision
    last_seq          BIGINT NOT NULL DEFAULT 0, -- seq of the last envelope appended
    mailbox_count     BIGINT NOT NULL DEFAULT 0, -- envelopes stored for the device
    signed_prekey_id  BIGINT NOT NULL,           -- signed EC prekey
    signed_prekey     BYTEA NOT NULL,
    signed_prekey_sig BYTEA NOT NULL,
    kyber_lr_id       BIGINT NOT NULL,           -- last-resort Kyber prekey
    kyber_lr          BYTEA NOT NULL,
    kyber_lr_sig      BYTEA NOT NULL,
    UNIQUE (account_id, device_id)
);

-- One-time EC prekeys; each is handed out once (deleted when taken).
CREATE TABLE one_time_prekeys (
    device_pk  BIGINT NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    key_id     BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    PRIMARY KEY (device_pk, key_id)
);

-- One-time Kyber prekeys; each is handed out once (deleted when taken).
CREATE TABLE one_time_kyber_prekeys (
    device_pk  BIGINT NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    key_id     BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    signature  BYTEA NOT NULL,
    PRIMARY KEY (device_pk, key_id)
);

-- Mailboxes: one queue per device, deleted on ack or after `expires_at`.
CREATE TABLE envelopes (
    device_pk  BIGINT NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,   -- per device, strictly increasing
    server_ts  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    kind       INTEGER NOT NULL,  -- wire EnvelopeKind
    content    BYTEA NOT NULL,    -- ciphertext
    PRIMARY KEY (device_pk, seq)
);

CREATE INDEX envelopes_expiry ON envelopes (expires_at);
