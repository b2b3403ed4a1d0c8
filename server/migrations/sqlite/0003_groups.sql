-- Groups. The server knows a group's roster (accounts and roles), its counters and the
-- client-encrypted blobs it cannot read; it stores no sender for any group message.

-- A group. `seq` is the last group seq handed out (messages and roster changes);
-- `epoch` grows when a member leaves or is removed, or a member account removes a device.
-- A deleted group keeps its row (no members) so its id is never reused and the `KIND_DELETED`
-- change can still be read.
CREATE TABLE chat_groups (
    id              BLOB PRIMARY KEY,      -- 16-byte UUID
    created_at      INTEGER NOT NULL,
    roster_version  INTEGER NOT NULL,
    epoch           INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    members_can_add INTEGER NOT NULL DEFAULT 0,
    max_members     INTEGER,               -- this group's own limit, if any (else the server's)
    title           BLOB NOT NULL,         -- client-encrypted
    description     BLOB NOT NULL,         -- client-encrypted
    avatar          BLOB NOT NULL,         -- client-encrypted
    deleted_at      INTEGER
);

CREATE TABLE group_members (
    group_id   BLOB NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    account_id BLOB NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role       INTEGER NOT NULL,           -- wire GroupRole: 1 member, 2 admin, 3 owner
    added_by   BLOB NOT NULL,
    joined_at  INTEGER NOT NULL,
    PRIMARY KEY (group_id, account_id)
) WITHOUT ROWID;

CREATE INDEX group_members_account ON group_members (account_id);

-- Group messages and roster changes, stored once; mailboxes reference them
-- (`envelopes.group_id`, `envelopes.group_seq`). `refs` counts those references: the row
-- is deleted with its last one (acked), or when it expires.
CREATE TABLE group_messages (
    group_id   BLOB NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    server_ts  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    kind       INTEGER NOT NULL,           -- GROUP_MESSAGE or ROSTER_CHANGE
    content    BLOB NOT NULL,
    refs       INTEGER NOT NULL,
    PRIMARY KEY (group_id, seq)
);

CREATE INDEX group_messages_expiry ON group_messages (expires_at);

-- "Device recipient_pk holds a sender-key distribution from device sender_pk for epoch":
-- the one place the server records that a device sends in a group. Void once the epoch grows
-- (deleted then), and gone with either device.
CREATE TABLE group_distributions (
    group_id     BLOB NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    sender_pk    INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    recipient_pk INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    epoch        INTEGER NOT NULL,
    PRIMARY KEY (group_id, sender_pk, recipient_pk)
) WITHOUT ROWID;

CREATE INDEX group_distributions_sender ON group_distributions (sender_pk);
CREATE INDEX group_distributions_recipient ON group_distributions (recipient_pk);

-- A mailbox entry that references a group message has empty `content` and names it here.
ALTER TABLE envelopes ADD COLUMN group_id BLOB;
ALTER TABLE envelopes ADD COLUMN group_seq INTEGER;

-- A resent group message is answered with its first group seq (0 for other writes).
ALTER TABLE send_keys ADD COLUMN group_seq INTEGER NOT NULL DEFAULT 0;
