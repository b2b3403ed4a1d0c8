-- Large groups are read from their stream. A group with more members than the server's
-- fan-out-on-read threshold (`--group-fanout-read-above`) stores each message once and
-- puts no reference in any mailbox: every member device reads the group's messages after
-- its own cursor. The switch happens at a roster change, whichever way the group crosses.

-- 1 while the group is read from its stream (its messages carry refs = 0).
ALTER TABLE chat_groups ADD COLUMN read_path INTEGER NOT NULL DEFAULT 0;

-- One cursor per member device of a stream-read group: the device has acknowledged every
-- message up to `acked_seq`. `until_seq` is set when the device's account leaves the group
-- (the change that removed it is the last it reads); the row goes once it is reached. A
-- stream message is deleted once every cursor of its group is past it, or when it expires.
CREATE TABLE group_cursors (
    device_pk INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    group_id  BLOB NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    acked_seq INTEGER NOT NULL,
    until_seq INTEGER,
    PRIMARY KEY (device_pk, group_id)
) WITHOUT ROWID;

CREATE INDEX group_cursors_group ON group_cursors (group_id, acked_seq);
