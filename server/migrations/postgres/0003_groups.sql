-- Groups. Mirrors migrations/sqlite/0003_groups.sql. The server knows a group's roster
-- (accounts and roles), its counters and the client-encrypted blobs it cannot read; it
-- stores no sender for any group message.
--
-- Locks are taken in one order everywhere, so nodes never wait on each other in a cycle:
-- `chat_groups` rows (by id) -> `devices` rows (by pk) -> `group_messages` rows (by group, seq).
-- `chat_groups.seq` only moves under its row lock.

-- A group. `seq` is the last group seq handed out (messages and roster changes);
-- `epoch` grows when a member leaves or is removed, or a member account removes a device.
-- A deleted group keeps its row (no members) so its id is never reused.
CREATE TABLE chat_groups (
    id              UUID PRIMARY KEY,
    created_at      BIGINT NOT NULL,
    roster_version  BIGINT NOT NULL,
    epoch           BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    members_can_add BOOLEAN NOT NULL DEFAULT FALSE,
    max_members     BIGINT,                -- this group's own limit, if any (else the server's)
    title           BYTEA NOT NULL,        -- client-encrypted
    description     BYTEA NOT NULL,        -- client-encrypted
    avatar          BYTEA NOT NULL,        -- client-encrypted
    deleted_at      BIGINT
);

CREATE TABLE group_members (
    group_id   UUID NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    account_id UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role       SMALLINT NOT NULL,          -- wire GroupRole: 1 member, 2 admin, 3 owner
    added_by   UUID NOT NULL,
    joined_at  BIGINT NOT NULL,
    PRIMARY KEY (group_id, account_id)
);

CREATE INDEX group_members_account ON group_members (account_id);

-- Group messages and roster changes, stored once; mailboxes reference them
-- (`envelopes.group_id`, `envelopes.group_seq`). `refs` counts those references: the row
-- is deleted with its last one (acked), or when it expires.
CREATE TABLE group_messages (
    group_id   UUID NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    server_ts  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    kind       INTEGER NOT NULL,           -- GROUP_MESSAGE or ROSTER_CHANGE
    content    BYTEA NOT NULL,
    refs       BIGINT NOT NULL,
    PRIMARY KEY (group_id, seq)
);

CREATE INDEX group_messages_expiry ON group_messages (expires_at);

-- "Device recipient_pk holds a sender-key distribution from device sender_pk for epoch":
-- the one place the server records that a device sends in a group. Void once the epoch grows
-- (deleted then), and gone with either device.
CREATE TABLE group_distributions (
    group_id     UUID NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    sender_pk    BIGINT NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    recipient_pk BIGINT NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    epoch        BIGINT NOT NULL,
    PRIMARY KEY (group_id, sender_pk, recipient_pk)
);

CREATE INDEX group_distributions_sender ON group_distributions (sender_pk);
CREATE INDEX group_distributions_recipient ON group_distributions (recipient_pk);

-- A mailbox entry that references a group message has empty `content` and names it here.
ALTER TABLE envelopes ADD COLUMN group_id UUID;
ALTER TABLE envelopes ADD COLUMN group_seq BIGINT;

-- A resent group message is answered with its first group seq (0 for other writes).
ALTER TABLE send_keys ADD COLUMN group_seq BIGINT NOT NULL DEFAULT 0;
