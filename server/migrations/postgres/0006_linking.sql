-- Linking a new device. A link token is kept as its SHA-256 only, with the account it
-- lets one device join, when it expires and when it was used (NULL: not yet).
CREATE TABLE link_tokens (
    token_hash BYTEA PRIMARY KEY,
    account_id UUID NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX link_tokens_expires_at ON link_tokens (expires_at);

-- Open provisioning sockets: which node holds the socket of an address, until when.
-- A row is taken (deleted) by the one message the address accepts.
CREATE TABLE provisioning_channels (
    address    TEXT PRIMARY KEY,
    node_id    TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX provisioning_channels_expires_at ON provisioning_channels (expires_at);
