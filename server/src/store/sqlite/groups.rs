//! [`GroupStore`] on SQLite: rosters, settings and the roster changes they write.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::{
    SqliteStore, backend, begin, finish, hex_id_array, load_sets, streams, to_i64, to_u32, to_u64, uuid_from,
    write_plan,
};
use crate::store::group_plan::{
    RosterEffect, apply_change, plan_create, plan_roster_change, role_from_number, role_number, roster_accounts,
    sort_members,
};
use crate::store::{
    ChangeCommitted, GroupChange, GroupError, GroupMemberRecord, GroupRecord, GroupStore, GroupSummaryRecord, NewGroup,
    StoreError,
};

/// The accounts among `ids` that exist.
async fn existing_accounts(conn: &mut SqliteConnection, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT id FROM accounts WHERE id IN (SELECT unhex(value) FROM json_each(?1))")
            .bind(hex_id_array(ids))
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
    rows.iter().map(|id| uuid_from(id)).collect()
}

/// A group with its members, or `None` if there is no such group.
async fn load_record(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<GroupRecord>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT roster_version, epoch, seq, members_can_add, max_members, title, description, avatar, read_path \
         FROM chat_groups WHERE id = ?",
    )
    .bind(id.as_bytes().as_slice())
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    else {
        return Ok(None);
    };
    let members = sqlx::query("SELECT account_id, role, added_by, joined_at FROM group_members WHERE group_id = ?")
        .bind(id.as_bytes().as_slice())
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    let mut members = members
        .iter()
        .map(|m| {
            Ok(GroupMemberRecord {
                account: uuid_from(&m.get::<Vec<u8>, _>(0))?,
                role: role_from_number(m.get(1)),
                added_by: uuid_from(&m.get::<Vec<u8>, _>(2))?,
                joined_at: to_u64(m.get(3)),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    sort_members(&mut members);
    Ok(Some(GroupRecord {
        id,
        roster_version: to_u64(row.get(0)),
        epoch: to_u64(row.get(1)),
        seq: to_u64(row.get(2)),
        members,
        members_can_add: row.get::<i64, _>(3) != 0,
        max_members: row.get::<Option<i64>, _>(4).map(to_u32),
        title: row.get(5),
        description: row.get(6),
        avatar: row.get(7),
        read_path: row.get::<i64, _>(8) != 0,
    }))
}

/// Writes the group row as `group` now is.
async fn update_row(
    conn: &mut SqliteConnection,
    group: &GroupRecord,
    deleted_at: Option<u64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE chat_groups SET roster_version = ?, epoch = ?, seq = ?, members_can_add = ?, title = ?, \
         description = ?, avatar = ?, deleted_at = COALESCE(deleted_at, ?), read_path = ? WHERE id = ?",
    )
    .bind(to_i64(group.roster_version))
    .bind(to_i64(group.epoch))
    .bind(to_i64(group.seq))
    .bind(group.members_can_add)
    .bind(&group.title)
    .bind(&group.description)
    .bind(&group.avatar)
    .bind(deleted_at.map(to_i64))
    .bind(group.read_path)
    .bind(group.id.as_bytes().as_slice())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Writes the roster part of `effect`, then the `RosterChange` to every recipient device
/// (by reference, or on the group's stream once it is read from there). A group that falls to
/// the fan-out-on-write size first moves its unread stream messages into the readers' mailboxes.
async fn write_effect(
    conn: &mut SqliteConnection,
    group: &GroupRecord,
    effect: &RosterEffect,
) -> Result<ChangeCommitted, StoreError> {
    let moving = effect.read_before && !group.read_path;
    let unread = if moving { streams::take_unread(conn, group.id, effect.change.seq).await? } else { Vec::new() };
    let id = group.id.as_bytes().as_slice();
    for m in &effect.added {
        sqlx::query(
            "INSERT INTO group_members (group_id, account_id, role, added_by, joined_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(m.account.as_bytes().as_slice())
        .bind(role_number(m.role))
        .bind(m.added_by.as_bytes().as_slice())
        .bind(to_i64(m.joined_at))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    for account in &effect.removed {
        sqlx::query("DELETE FROM group_members WHERE group_id = ? AND account_id = ?")
            .bind(id)
            .bind(account.as_bytes().as_slice())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    if let Some((account, role)) = effect.role {
        sqlx::query("UPDATE group_members SET role = ? WHERE group_id = ? AND account_id = ?")
            .bind(role_number(role))
            .bind(id)
            .bind(account.as_bytes().as_slice())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    if effect.epoch_bumped {
        sqlx::query("DELETE FROM group_distributions WHERE group_id = ?")
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    let mut sets = load_sets(conn, &roster_accounts(effect, &unread)).await?;
    let planned = plan_roster_change(&mut sets, effect, group.read_path, &unread);
    write_plan(conn, &planned.plan).await?;
    if moving {
        streams::drop_unreferenced(conn, group.id, effect.change.seq).await?;
    }
    streams::write_cursors(conn, &planned.cursors).await?;
    Ok(ChangeCommitted {
        group: group.id,
        roster_version: group.roster_version,
        epoch: group.epoch,
        group_seq: group.seq,
        committed: planned.committed,
        streamed: planned.streamed,
        moved: planned.moved,
    })
}

#[async_trait]
impl GroupStore for SqliteStore {
    async fn create_group(&self, new: &NewGroup) -> Result<ChangeCommitted, GroupError> {
        let mut conn = begin(&self.write).await?;
        let result: Result<ChangeCommitted, GroupError> = async {
            let existing = existing_accounts(&mut conn, &new.members).await?;
            let (group, effect) = plan_create(new, &existing)?;
            sqlx::query(
                "INSERT INTO chat_groups (id, created_at, roster_version, epoch, seq, members_can_add, title, \
                 description, avatar, read_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(group.id.as_bytes().as_slice())
            .bind(to_i64(new.server_ts))
            .bind(to_i64(group.roster_version))
            .bind(to_i64(group.epoch))
            .bind(to_i64(group.seq))
            .bind(group.members_can_add)
            .bind(&group.title)
            .bind(&group.description)
            .bind(&group.avatar)
            .bind(group.read_path)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
            Ok(write_effect(&mut conn, &group, &effect).await?)
        }
        .await;
        finish(&mut conn, result).await
    }

    async fn group(&self, id: Uuid, caller: Uuid) -> Result<GroupRecord, GroupError> {
        let mut conn = self.read.acquire().await.map_err(backend)?;
        let group = load_record(&mut conn, id).await?.ok_or(GroupError::NotAMember)?;
        if !group.members.iter().any(|m| m.account == caller) {
            return Err(GroupError::NotAMember);
        }
        Ok(group)
    }

    async fn groups_of(&self, account: Uuid) -> Result<Vec<GroupSummaryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.id, g.roster_version, m.role FROM group_members m JOIN chat_groups g ON g.id = m.group_id \
             WHERE m.account_id = ? ORDER BY g.id",
        )
        .bind(account.as_bytes().as_slice())
        .fetch_all(&self.read)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(GroupSummaryRecord {
                    id: uuid_from(&r.get::<Vec<u8>, _>(0))?,
                    roster_version: to_u64(r.get(1)),
                    role: role_from_number(r.get(2)),
                })
            })
            .collect()
    }

    async fn change_group(&self, change: &GroupChange) -> Result<ChangeCommitted, GroupError> {
        let mut conn = begin(&self.write).await?;
        let result: Result<ChangeCommitted, GroupError> = async {
            let mut group = load_record(&mut conn, change.group).await?.ok_or(GroupError::NotAMember)?;
            let to_add = match &change.op {
                crate::store::GroupOp::Add(list) => list.clone(),
                _ => Vec::new(),
            };
            let existing = existing_accounts(&mut conn, &to_add).await?;
            let effect = apply_change(&mut group, change, &existing)?;
            update_row(&mut conn, &group, effect.deleted.then_some(change.server_ts)).await?;
            Ok(write_effect(&mut conn, &group, &effect).await?)
        }
        .await;
        finish(&mut conn, result).await
    }
}
