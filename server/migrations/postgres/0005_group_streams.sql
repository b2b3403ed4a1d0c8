-- Large groups are read from their stream. Mirrors migrations/sqlite/0005_group_streams.sql:
-- a group with more members than the server's fan-out-on-read threshold
-- (`--group-fanout-read-above`) stores each message once and puts no reference in any
-- mailbox; every member device reads the group's messages after its own cursor. The switch
-- happens at a roster change (under the group's row lock), whichever way the group crosses.

-- TRUE while the group is read from its stream (its messages carry refs = 0).
ALTER TABLE chat_groups ADD COLUMN read_path BOOLEAN NOT NULL DEFAULT FALSE;

-- One cursor per member device of a stream-read group: the device has acknowledged every
-- message up to `acked_seq`. `until_seq` is set when the device's account leaves the group
-- (the change that removed it is the last it reads); the row goes once it is reached. A
-- stream message is deleted once every cursor of its group is past it, or when it expires.
CREATE TABLE group_cursors (
    device_pk BIGINT NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    group_id  UUID NOT NULL REFERENCES chat_groups (id) ON DELETE CASCADE,
    acked_seq BIGINT NOT NULL,
    until_seq BIGINT,
    PRIMARY KEY (device_pk, group_id)
);

CREATE INDEX group_cursors_group ON group_cursors (group_id, acked_seq);
