//! [`GroupStore`] on Postgres: rosters, settings and the roster changes they write. A change
//! locks its group row first, then the recipients' device rows (the lock order of the schema).

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::{PostgresStore, backend, get, get_uuid, load_sets, streams, to_i64, to_u64, write_plan};
use crate::store::group_plan::{
    RosterEffect, apply_change, plan_create, plan_roster_change, role_from_number, role_number, roster_accounts,
    sort_members,
};
use crate::store::{
    ChangeCommitted, GroupChange, GroupError, GroupMemberRecord, GroupOp, GroupRecord, GroupStore, GroupSummaryRecord,
    NewGroup, StoreError,
};

/// The accounts among `ids` that exist.
async fn existing_accounts(conn: &mut PgConnection, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let list: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let rows = sqlx::query("SELECT id::text AS id FROM accounts WHERE id = ANY($1::text[]::uuid[])")
        .bind(list)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    rows.iter().map(|r| get_uuid(r, "id")).collect()
}

/// A group with its members (its row locked when `lock`), or `None` if there is no such group.
async fn load_record(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<Option<GroupRecord>, StoreError> {
    let sql = format!(
        "SELECT roster_version, epoch, seq, members_can_add, max_members, title, description, avatar, read_path \
         FROM chat_groups WHERE id = $1::uuid{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let Some(row) = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&mut *conn).await.map_err(backend)? else {
        return Ok(None);
    };
    let members = sqlx::query(
        "SELECT account_id::text AS account_id, role, added_by::text AS added_by, joined_at \
         FROM group_members WHERE group_id = $1::uuid",
    )
    .bind(id.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let mut members = members
        .iter()
        .map(|m| {
            Ok(GroupMemberRecord {
                account: get_uuid(m, "account_id")?,
                role: role_from_number(i64::from(get::<i16>(m, "role")?)),
                added_by: get_uuid(m, "added_by")?,
                joined_at: to_u64(get(m, "joined_at")?),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    sort_members(&mut members);
    Ok(Some(GroupRecord {
        id,
        roster_version: to_u64(get(&row, "roster_version")?),
        epoch: to_u64(get(&row, "epoch")?),
        seq: to_u64(get(&row, "seq")?),
        members,
        members_can_add: get(&row, "members_can_add")?,
        max_members: get::<Option<i64>>(&row, "max_members")?.and_then(|n| u32::try_from(n).ok()),
        title: get(&row, "title")?,
        description: get(&row, "description")?,
        avatar: get(&row, "avatar")?,
        read_path: get(&row, "read_path")?,
    }))
}

/// Writes the roster part of `effect` and the group row, then the `RosterChange` to every
/// recipient device (locking their rows).
async fn write_effect(
    conn: &mut PgConnection,
    group: &GroupRecord,
    effect: &RosterEffect,
    deleted_at: Option<u64>,
) -> Result<ChangeCommitted, StoreError> {
    let id = group.id.to_string();
    let moving = effect.read_before && !group.read_path;
    let unread = if moving { streams::take_unread(conn, group.id, effect.change.seq).await? } else { Vec::new() };
    sqlx::query(
        "UPDATE chat_groups SET roster_version = $1, epoch = $2, seq = $3, members_can_add = $4, title = $5, \
         description = $6, avatar = $7, deleted_at = COALESCE(deleted_at, $8), read_path = $10 WHERE id = $9::uuid",
    )
    .bind(to_i64(group.roster_version))
    .bind(to_i64(group.epoch))
    .bind(to_i64(group.seq))
    .bind(group.members_can_add)
    .bind(&group.title)
    .bind(&group.description)
    .bind(&group.avatar)
    .bind(deleted_at.map(to_i64))
    .bind(&id)
    .bind(group.read_path)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    if !effect.added.is_empty() {
        let a = &effect.added;
        sqlx::query(
            "INSERT INTO group_members (group_id, account_id, role, added_by, joined_at) \
             SELECT $1::uuid, * FROM UNNEST($2::text[]::uuid[], $3::smallint[], $4::text[]::uuid[], $5::bigint[])",
        )
        .bind(&id)
        .bind(a.iter().map(|m| m.account.to_string()).collect::<Vec<_>>())
        .bind(a.iter().map(|m| i16::try_from(role_number(m.role)).unwrap_or(1)).collect::<Vec<_>>())
        .bind(a.iter().map(|m| m.added_by.to_string()).collect::<Vec<_>>())
        .bind(a.iter().map(|m| to_i64(m.joined_at)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    if !effect.removed.is_empty() {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1::uuid AND account_id = ANY($2::text[]::uuid[])")
            .bind(&id)
            .bind(effect.removed.iter().map(Uuid::to_string).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    if let Some((account, role)) = effect.role {
        sqlx::query("UPDATE group_members SET role = $1 WHERE group_id = $2::uuid AND account_id = $3::uuid")
            .bind(i16::try_from(role_number(role)).unwrap_or(1))
            .bind(&id)
            .bind(account.to_string())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    if effect.epoch_bumped {
        sqlx::query("DELETE FROM group_distributions WHERE group_id = $1::uuid")
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    let mut sets = load_sets(conn, &roster_accounts(effect, &unread), true).await?;
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
impl GroupStore for PostgresStore {
    async fn create_group(&self, new: &NewGroup) -> Result<ChangeCommitted, GroupError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let existing = existing_accounts(&mut tx, &new.members).await?;
        let (group, effect) = plan_create(new, &existing)?;
        sqlx::query(
            "INSERT INTO chat_groups (id, created_at, roster_version, epoch, seq, members_can_add, title, \
             description, avatar, read_path) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(group.id.to_string())
        .bind(to_i64(new.server_ts))
        .bind(to_i64(group.roster_version))
        .bind(to_i64(group.epoch))
        .bind(to_i64(group.seq))
        .bind(group.members_can_add)
        .bind(&group.title)
        .bind(&group.description)
        .bind(&group.avatar)
        .bind(group.read_path)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let committed = write_effect(&mut tx, &group, &effect, None).await?;
        tx.commit().await.map_err(backend)?;
        Ok(committed)
    }

    async fn group(&self, id: Uuid, caller: Uuid) -> Result<GroupRecord, GroupError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let group = load_record(&mut conn, id, false).await?.ok_or(GroupError::NotAMember)?;
        if !group.members.iter().any(|m| m.account == caller) {
            return Err(GroupError::NotAMember);
        }
        Ok(group)
    }

    async fn groups_of(&self, account: Uuid) -> Result<Vec<GroupSummaryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.id::text AS id, g.roster_version, m.role FROM group_members m \
             JOIN chat_groups g ON g.id = m.group_id WHERE m.account_id = $1::uuid ORDER BY g.id",
        )
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(GroupSummaryRecord {
                    id: get_uuid(r, "id")?,
                    roster_version: to_u64(get(r, "roster_version")?),
                    role: role_from_number(i64::from(get::<i16>(r, "role")?)),
                })
            })
            .collect()
    }

    async fn change_group(&self, change: &GroupChange) -> Result<ChangeCommitted, GroupError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut group = load_record(&mut tx, change.group, true).await?.ok_or(GroupError::NotAMember)?;
        let to_add = match &change.op {
            GroupOp::Add(list) => list.clone(),
            _ => Vec::new(),
        };
        let existing = existing_accounts(&mut tx, &to_add).await?;
        let effect = apply_change(&mut group, change, &existing)?;
        let committed = write_effect(&mut tx, &group, &effect, effect.deleted.then_some(change.server_ts)).await?;
        tx.commit().await.map_err(backend)?;
        Ok(committed)
    }
}
