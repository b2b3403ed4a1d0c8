//! The database-free half of groups, shared by both backends: checking group sends and
//! distributions against a group's loaded state ([`plan_group_send`], [`plan_distribute`],
//! called from [`super::plan::plan`]), and deciding roster changes by role
//! ([`plan_create`], [`apply_change`]) including the server-built `RosterChange` they store.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use hush_wire::frames::{EnvelopeKind, RosterChange, roster_change};
use prost::Message as _;
use uuid::Uuid;

use super::plan::{DeviceSets, DistributionRow, EnvelopeDraft, GroupMessageRow, Plan};
use super::{
    Accepted, Committed, DeviceKey, DistributeItem, GroupChange, GroupError, GroupMemberRecord, GroupOp, GroupPosition,
    GroupRecord, GroupRole, GroupSendItem, GroupSettings, Mismatch, NewGroup, SendOutcome, SendRejection,
    StoredEnvelope, Streamed,
};

/// What the send path needs of one group, read (and locked) up front.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupState {
    pub epoch: u64,
    pub seq: u64,
    /// Member devices read it from its stream.
    pub read_path: bool,
    /// Member accounts (none once the group is deleted).
    pub members: Vec<Uuid>,
    /// (sender device pk, recipient device pk) pairs holding a distribution for `epoch`.
    pub distributions: HashSet<(i64, i64)>,
}

/// The groups of a batch by id.
pub(crate) type GroupStates = HashMap<Uuid, GroupState>;

/// The store's number for a role (the wire `GroupRole` value).
pub(crate) fn role_number(role: GroupRole) -> i64 {
    match role {
        GroupRole::Member => 1,
        GroupRole::Admin => 2,
        GroupRole::Owner => 3,
    }
}

/// A role from its stored number (unknown numbers read as plain members).
pub(crate) fn role_from_number(n: i64) -> GroupRole {
    match n {
        3 => GroupRole::Owner,
        2 => GroupRole::Admin,
        _ => GroupRole::Member,
    }
}

fn wire_role(role: GroupRole) -> hush_wire::frames::GroupRole {
    match role {
        GroupRole::Member => hush_wire::frames::GroupRole::Member,
        GroupRole::Admin => hush_wire::frames::GroupRole::Admin,
        GroupRole::Owner => hush_wire::frames::GroupRole::Owner,
    }
}

/// Checks that the sender may write to the group under `epoch`.
fn admit(groups: &GroupStates, group: Uuid, sender: Uuid, epoch: u64) -> Result<&GroupState, SendRejection> {
    let g = groups.get(&group).filter(|g| g.members.contains(&sender)).ok_or(SendRejection::NotAMember)?;
    if epoch != g.epoch {
        return Err(SendRejection::StaleEpoch { current_epoch: g.epoch });
    }
    Ok(g)
}

/// Plans one group message: stored once with the group's next seq, referenced from every
/// other member device's mailbox (full or not). Refused while any of them holds no
/// distribution from the sending device for the current epoch.
pub(crate) fn plan_group_send(
    plan: &mut Plan,
    sets: &mut DeviceSets,
    groups: &mut GroupStates,
    item: &GroupSendItem,
) -> SendOutcome {
    let g = admit(groups, item.group, item.sender.account, item.epoch)?;
    let sender_pk = sets.index_of(item.sender).map(|i| sets.row(i).pk).ok_or(SendRejection::NotAMember)?;
    let mut members = g.members.clone();
    members.sort_unstable();
    let mut missing = Vec::new();
    let mut targets = Vec::new();
    for account in members {
        let mut lacking = Vec::new();
        for &i in sets.account_rows(account) {
            let row = sets.row(i);
            if account == item.sender.account && row.device_id == item.sender.device_id {
                continue;
            }
            if g.distributions.contains(&(sender_pk, row.pk)) {
                targets.push(i);
            } else {
                lacking.push(row.device_id);
            }
        }
        if !lacking.is_empty() {
            // Postgres reads device rows in pk order; a reused device id may come late.
            lacking.sort_unstable();
            missing.push(Mismatch { account, missing: lacking, ..Mismatch::default() });
        }
    }
    if !missing.is_empty() {
        return Err(SendRejection::MissingDistributions { current_epoch: g.epoch, mismatches: missing });
    }
    let kind = EnvelopeKind::GroupMessage as i32;
    let g = groups.get_mut(&item.group).ok_or(SendRejection::NotAMember)?;
    g.seq += 1;
    let position = GroupPosition { group: item.group, seq: g.seq };
    plan.group_seqs.insert(item.group, g.seq);
    let mut message = GroupMessageRow {
        group: item.group,
        seq: g.seq,
        server_ts: item.server_ts,
        expires_at: item.expires_at,
        kind,
        content: item.content.clone(),
        refs: targets.len() as u64,
    };
    if g.read_path {
        message.refs = 0;
        let devices = targets.iter().map(|&i| sets.key_of(i)).collect();
        let streamed = stream(plan, message, devices);
        return Ok(Accepted::Stored { committed: Vec::new(), group_seq: Some(position.seq), streamed: Some(streamed) });
    }
    let committed = fan_out(plan, sets, &targets, message);
    Ok(Accepted::Stored { committed, group_seq: Some(position.seq), streamed: None })
}

/// Stores `message` once for a stream-read group (no mailbox references it) and says whom
/// to wake with it.
fn stream(plan: &mut Plan, message: GroupMessageRow, devices: Vec<DeviceKey>) -> Box<Streamed> {
    let envelope = StoredEnvelope {
        seq: 0,
        server_ts: message.server_ts,
        kind: message.kind,
        content: message.content.clone(),
        group: Some(GroupPosition { group: message.group, seq: message.seq }),
    };
    plan.group_messages.push(message);
    Box::new(Streamed { envelope, devices })
}

/// Stores `message` once (if anyone references it) and a reference to it in the mailbox of
/// every row in `targets`.
pub(crate) fn fan_out(
    plan: &mut Plan,
    sets: &mut DeviceSets,
    targets: &[usize],
    message: GroupMessageRow,
) -> Vec<Committed> {
    let position = GroupPosition { group: message.group, seq: message.seq };
    let draft = EnvelopeDraft {
        server_ts: message.server_ts,
        expires_at: message.expires_at,
        kind: message.kind,
        content: message.content.clone(),
        group: Some(position),
    };
    let committed = targets.iter().map(|&i| plan.append(sets, i, draft.clone())).collect();
    if message.refs > 0 {
        plan.group_messages.push(message);
    }
    committed
}

/// Plans one distribution: every named device must be a current member device other than
/// the sender, with the registration id given; each gets its ciphertext (full mailbox or
/// not) and is recorded as holding a distribution from the sender for the epoch.
pub(crate) fn plan_distribute(
    plan: &mut Plan,
    sets: &mut DeviceSets,
    groups: &mut GroupStates,
    item: &DistributeItem,
) -> SendOutcome {
    let g = admit(groups, item.group, item.sender.account, item.epoch)?;
    let epoch = g.epoch;
    let sender_pk = sets.index_of(item.sender).map(|i| sets.row(i).pk).ok_or(SendRejection::NotAMember)?;
    let mut mismatches = Vec::new();
    let mut targets = Vec::new();
    for recipient in &item.recipients {
        let member = g.members.contains(&recipient.account);
        let mut m = Mismatch { account: recipient.account, ..Mismatch::default() };
        for message in &recipient.messages {
            let key = super::DeviceKey { account: recipient.account, device_id: message.device_id };
            match sets.index_of(key).filter(|_| member && key != item.sender) {
                None => m.extra.push(message.device_id),
                Some(i) if sets.row(i).registration_id != message.registration_id => m.stale.push(message.device_id),
                Some(i) => targets.push((i, message)),
            }
        }
        if !m.extra.is_empty() || !m.stale.is_empty() {
            m.extra.sort_unstable();
            m.stale.sort_unstable();
            mismatches.push(m);
        }
    }
    if !mismatches.is_empty() {
        return Err(SendRejection::GroupDeviceMismatch { current_epoch: epoch, mismatches });
    }
    let mut committed = Vec::with_capacity(targets.len());
    let mut held = Vec::with_capacity(targets.len());
    for (i, message) in targets {
        let recipient_pk = sets.row(i).pk;
        let draft = EnvelopeDraft {
            server_ts: item.server_ts,
            expires_at: item.expires_at,
            kind: message.kind,
            content: message.content.clone(),
            group: None,
        };
        committed.push(plan.append(sets, i, draft));
        plan.distributions.push(DistributionRow { group: item.group, epoch, sender_pk, recipient_pk });
        held.push((sender_pk, recipient_pk));
    }
    if let Some(g) = groups.get_mut(&item.group) {
        g.distributions.extend(held);
    }
    Ok(Accepted::Stored { committed, group_seq: None, streamed: None })
}

/// What a roster change does to the stored group, for the backend to write.
#[derive(Debug, Clone, Default)]
pub(crate) struct RosterEffect {
    /// Members to insert.
    pub added: Vec<GroupMemberRecord>,
    /// Accounts to remove.
    pub removed: Vec<Uuid>,
    /// A member's new role.
    pub role: Option<(Uuid, GroupRole)>,
    /// Settings to change.
    pub settings: GroupSettings,
    /// The group is deleted (every member removed).
    pub deleted: bool,
    /// The epoch grew: distribution records of the group are void.
    pub epoch_bumped: bool,
    /// Accounts whose devices get the `RosterChange` (members before and after).
    pub recipients: Vec<Uuid>,
    /// The change as stored (`ENVELOPE_KIND_ROSTER_CHANGE`).
    pub change: GroupMessageRow,
    /// The group was read from its stream before the change (the record says after).
    pub read_before: bool,
}

/// The cursor rows a roster change of a stream-read group writes. Every device named starts
/// reading at the change itself (`acked_seq` = its seq − 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CursorPlan {
    /// The group.
    pub group: Uuid,
    /// The change's group seq.
    pub seq: u64,
    /// Devices that start reading at the change, with the last seq they read (`Some(seq)`
    /// for the devices of accounts the change removes: it is the last thing they read). An
    /// existing cursor of a device restarts here.
    pub start: Vec<(i64, Option<u64>)>,
    /// Devices of accounts the change removes that were reading already: they stop after it.
    pub stop: Vec<i64>,
}

/// Whether a group of `members` members is read from its stream.
pub(crate) fn reads_from_stream(members: usize, read_above: u32) -> bool {
    members > read_above as usize
}

fn encode_change(
    group: &GroupRecord,
    kind: roster_change::Kind,
    actor: Uuid,
    accounts: &[Uuid],
    role: Option<GroupRole>,
    server_ts: u64,
) -> Bytes {
    let change = RosterChange {
        group_id: group.id.as_bytes().to_vec().into(),
        kind: kind as i32,
        actor: actor.as_bytes().to_vec().into(),
        accounts: accounts.iter().map(|a| a.as_bytes().to_vec().into()).collect(),
        role: role.map_or(0, |r| wire_role(r) as i32),
        roster_version: group.roster_version,
        epoch: group.epoch,
        server_timestamp: server_ts,
    };
    Bytes::from(change.encode_to_vec())
}

fn role_of(group: &GroupRecord, account: Uuid) -> Option<GroupRole> {
    group.members.iter().find(|m| m.account == account).map(|m| m.role)
}

fn owners(group: &GroupRecord) -> usize {
    group.members.iter().filter(|m| m.role == GroupRole::Owner).count()
}

/// Sorts members as the API lists them: owners first, then admins, then members, each by id.
pub(crate) fn sort_members(members: &mut [GroupMemberRecord]) {
    members.sort_by(|a, b| b.role.cmp(&a.role).then(a.account.cmp(&b.account)));
}

/// Plans a new group: `existing` are the accounts (of `new.members`) that exist.
pub(crate) fn plan_create(new: &NewGroup, existing: &HashSet<Uuid>) -> Result<(GroupRecord, RosterEffect), GroupError> {
    let mut others: Vec<Uuid> = new.members.iter().copied().filter(|&a| a != new.owner).collect();
    others.sort_unstable();
    others.dedup();
    if let Some(&unknown) = others.iter().find(|a| !existing.contains(a)) {
        return Err(GroupError::UnknownAccount(unknown));
    }
    if others.len() + 1 > new.max_members as usize {
        return Err(GroupError::GroupFull(new.max_members));
    }
    let member = |account, role| GroupMemberRecord { account, role, added_by: new.owner, joined_at: new.server_ts };
    let mut members = vec![member(new.owner, GroupRole::Owner)];
    members.extend(others.iter().map(|&a| member(a, GroupRole::Member)));
    let group = GroupRecord {
        id: new.id,
        roster_version: 1,
        epoch: 1,
        seq: 1,
        members: members.clone(),
        title: new.title.clone(),
        description: new.description.clone(),
        avatar: new.avatar.clone(),
        members_can_add: new.members_can_add,
        max_members: None,
        read_path: reads_from_stream(members.len(), new.read_above),
    };
    let content = encode_change(&group, roster_change::Kind::Created, new.owner, &others, None, new.server_ts);
    let recipients = members.iter().map(|m| m.account).collect();
    let effect = RosterEffect {
        added: members,
        recipients,
        change: GroupMessageRow {
            group: new.id,
            seq: 1,
            server_ts: new.server_ts,
            expires_at: new.expires_at,
            kind: EnvelopeKind::RosterChange as i32,
            content,
            refs: 0,
        },
        ..RosterEffect::default()
    };
    Ok((group, effect))
}

/// Applies `change` to `group` (as loaded in the transaction) if the actor's role allows
/// it, and says what to write. `existing` are the accounts to add that exist.
pub(crate) fn apply_change(
    group: &mut GroupRecord,
    change: &GroupChange,
    existing: &HashSet<Uuid>,
) -> Result<RosterEffect, GroupError> {
    use roster_change::Kind;
    let actor_role = role_of(group, change.actor).ok_or(GroupError::NotAMember)?;
    let before: Vec<Uuid> = group.members.iter().map(|m| m.account).collect();
    let mut effect = RosterEffect::default();
    let (kind, accounts, role) = match &change.op {
        GroupOp::Update(settings) => {
            if actor_role < GroupRole::Admin {
                return Err(GroupError::Forbidden);
            }
            if let Some(v) = &settings.title {
                group.title.clone_from(v);
            }
            if let Some(v) = &settings.description {
                group.description.clone_from(v);
            }
            if let Some(v) = &settings.avatar {
                group.avatar.clone_from(v);
            }
            if let Some(v) = settings.members_can_add {
                group.members_can_add = v;
            }
            effect.settings = settings.clone();
            (Kind::SettingsChanged, Vec::new(), None)
        }
        GroupOp::Add(list) => {
            if actor_role < GroupRole::Admin && !group.members_can_add {
                return Err(GroupError::Forbidden);
            }
            let mut list = list.clone();
            list.sort_unstable();
            list.dedup();
            if let Some(&already) = list.iter().find(|a| before.contains(a)) {
                return Err(GroupError::AlreadyMember(already));
            }
            if let Some(&unknown) = list.iter().find(|a| !existing.contains(a)) {
                return Err(GroupError::UnknownAccount(unknown));
            }
            if before.len() + list.len() > change.max_members as usize {
                return Err(GroupError::GroupFull(change.max_members));
            }
            for &account in &list {
                let m = GroupMemberRecord {
                    account,
                    role: GroupRole::Member,
                    added_by: change.actor,
                    joined_at: change.server_ts,
                };
                group.members.push(m.clone());
                effect.added.push(m);
            }
            (Kind::Added, list, Some(GroupRole::Member))
        }
        GroupOp::Remove(target) if *target == change.actor => {
            if actor_role == GroupRole::Owner && owners(group) == 1 {
                return Err(GroupError::LastOwner);
            }
            group.members.retain(|m| m.account != *target);
            effect.removed.push(*target);
            effect.epoch_bumped = true;
            (Kind::Left, vec![*target], None)
        }
        GroupOp::Remove(target) => {
            if actor_role < GroupRole::Admin {
                return Err(GroupError::Forbidden);
            }
            let target_role = role_of(group, *target).ok_or(GroupError::NotInGroup(*target))?;
            if target_role == GroupRole::Owner && actor_role != GroupRole::Owner {
                return Err(GroupError::Forbidden);
            }
            group.members.retain(|m| m.account != *target);
            effect.removed.push(*target);
            effect.epoch_bumped = true;
            (Kind::Removed, vec![*target], None)
        }
        GroupOp::SetRole(target, new_role) => {
            if actor_role != GroupRole::Owner {
                return Err(GroupError::Forbidden);
            }
            let target_role = role_of(group, *target).ok_or(GroupError::NotInGroup(*target))?;
            if target_role == GroupRole::Owner && *new_role != GroupRole::Owner && owners(group) == 1 {
                return Err(GroupError::LastOwner);
            }
            for m in &mut group.members {
                if m.account == *target {
                    m.role = *new_role;
                }
            }
            effect.role = Some((*target, *new_role));
            (Kind::RoleChanged, vec![*target], Some(*new_role))
        }
        GroupOp::Delete => {
            if actor_role != GroupRole::Owner {
                return Err(GroupError::Forbidden);
            }
            effect.removed.clone_from(&before);
            group.members.clear();
            effect.deleted = true;
            effect.epoch_bumped = true;
            (Kind::Deleted, Vec::new(), None)
        }
    };
    group.roster_version += 1;
    group.seq += 1;
    if effect.epoch_bumped {
        group.epoch += 1;
    }
    effect.read_before = group.read_path;
    group.read_path = !effect.deleted && reads_from_stream(group.members.len(), change.read_above);
    sort_members(&mut group.members);
    let mut recipients = before;
    recipients.extend(effect.added.iter().map(|m| m.account));
    recipients.sort_unstable();
    recipients.dedup();
    effect.recipients = recipients;
    effect.change = GroupMessageRow {
        group: group.id,
        seq: group.seq,
        server_ts: change.server_ts,
        expires_at: change.expires_at,
        kind: EnvelopeKind::RosterChange as i32,
        content: encode_change(group, kind, change.actor, &accounts, role, change.server_ts),
        refs: 0,
    };
    Ok(effect)
}

/// A roster change planned: what to write, and what to deliver once it is committed.
#[derive(Debug, Default)]
pub(crate) struct RosterPlan {
    /// The writes.
    pub plan: Plan,
    /// The mailbox references to deliver (a fan-out-on-write group).
    pub committed: Vec<Committed>,
    /// The stream message to deliver (a stream-read group).
    pub streamed: Option<Streamed>,
    /// The cursors to write (a stream-read group).
    pub cursors: CursorPlan,
    /// Devices whose unread stream messages moved into their mailboxes.
    pub moved: Vec<DeviceKey>,
}

/// One unread message of a stream-read group for one device, as the backend reads it when
/// the group falls to the fan-out-on-write size.
#[derive(Debug, Clone)]
pub(crate) struct UnreadRow {
    /// The device's account.
    pub account: Uuid,
    /// The device's mailbox pk.
    pub pk: i64,
    pub seq: u64,
    pub server_ts: u64,
    pub expires_at: u64,
    pub kind: i32,
}

/// The accounts whose device rows a roster change needs: its recipients, and the readers of
/// unread stream messages being moved into mailboxes.
pub(crate) fn roster_accounts(effect: &RosterEffect, unread: &[UnreadRow]) -> Vec<Uuid> {
    let mut accounts = effect.recipients.clone();
    accounts.extend(unread.iter().map(|u| u.account));
    accounts.sort_unstable();
    accounts.dedup();
    accounts
}

/// Plans writing a roster change (stored once) to every device of its recipients (`sets`
/// holds them): a reference in each mailbox while the group fans out on write, or, once it
/// is read from its stream (`read_after`), the stream message and the cursors of the
/// devices that start or stop reading with it. `unread` (a group falling to the
/// fan-out-on-write size) is first moved into the readers' mailboxes as references, in
/// group seq order per device, so each reads it before the change that switched the group.
pub(crate) fn plan_roster_change(
    sets: &mut DeviceSets,
    effect: &RosterEffect,
    read_after: bool,
    unread: &[UnreadRow],
) -> RosterPlan {
    let mut out = RosterPlan::default();
    let mut change = effect.change.clone();
    for row in unread {
        let Some(i) = sets.account_rows(row.account).iter().copied().find(|&i| sets.row(i).pk == row.pk) else {
            continue;
        };
        let draft = EnvelopeDraft {
            server_ts: row.server_ts,
            expires_at: row.expires_at,
            kind: row.kind,
            content: Bytes::new(),
            group: Some(GroupPosition { group: change.group, seq: row.seq }),
        };
        let device = out.plan.append(sets, i, draft).device;
        *out.plan.group_refs.entry((change.group, row.seq)).or_insert(0) += 1;
        if !out.moved.contains(&device) {
            out.moved.push(device);
        }
    }
    let targets: Vec<usize> = effect.recipients.iter().flat_map(|&a| sets.account_rows(a).to_vec()).collect();
    out.plan.group_seqs.insert(change.group, change.seq);
    if !read_after {
        change.refs = targets.len() as u64;
        out.committed = fan_out(&mut out.plan, sets, &targets, change);
        return out;
    }
    out.cursors = CursorPlan { group: change.group, seq: change.seq, ..CursorPlan::default() };
    let added: HashSet<Uuid> = effect.added.iter().map(|m| m.account).collect();
    for &i in &targets {
        let (account, pk) = (sets.key_of(i).account, sets.row(i).pk);
        let leaving = effect.removed.contains(&account);
        if !effect.read_before {
            out.cursors.start.push((pk, leaving.then_some(change.seq)));
        } else if added.contains(&account) {
            out.cursors.start.push((pk, None));
        } else if leaving {
            out.cursors.stop.push(pk);
        }
    }
    change.refs = 0;
    let devices = targets.iter().map(|&i| sets.key_of(i)).collect();
    out.streamed = Some(*stream(&mut out.plan, change, devices));
    out
}

/// Per group, how many references to each of its messages a set of deleted envelopes held.
pub(crate) fn refs_dropped(gone: &[GroupPosition]) -> BTreeMap<(Uuid, u64), u64> {
    let mut out = BTreeMap::new();
    for p in gone {
        *out.entry((p.group, p.seq)).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::plan::DeviceRow;
    use crate::store::{DeviceKey, OutgoingMessage, RecipientBatch};

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);
    const C: Uuid = Uuid::from_u128(0xc);
    const G: Uuid = Uuid::from_u128(0x99);

    fn sets() -> DeviceSets {
        let mut sets = DeviceSets::default();
        let mut pk = 0;
        for (account, devices) in [(A, 1), (B, 2), (C, 1)] {
            for device_id in 1..=devices {
                pk += 1;
                let row = DeviceRow { pk, device_id, registration_id: 100 + device_id, mailbox_count: 0, last_seq: 0 };
                sets.add_device(account, row);
            }
        }
        sets
    }

    fn groups(distributions: &[(i64, i64)]) -> GroupStates {
        let state = GroupState {
            epoch: 3,
            seq: 10,
            read_path: false,
            members: vec![A, B, C],
            distributions: distributions.iter().copied().collect(),
        };
        HashMap::from([(G, state)])
    }

    fn send(epoch: u64) -> GroupSendItem {
        GroupSendItem {
            sender: DeviceKey { account: A, device_id: 1 },
            group: G,
            epoch,
            content: Bytes::from_static(b"skm"),
            server_ts: 5,
            expires_at: 50,
            idempotency_key: None,
        }
    }

    #[test]
    fn a_group_send_names_exactly_the_devices_lacking_a_distribution() {
        let (mut plan, mut sets) = (Plan::default(), sets());
        // A's device (pk 1) distributed to B.1 (pk 2) only.
        let mut groups = groups(&[(1, 2)]);
        let got = plan_group_send(&mut plan, &mut sets, &mut groups, &send(3));
        let expected = vec![
            Mismatch { account: B, missing: vec![2], ..Mismatch::default() },
            Mismatch { account: C, missing: vec![1], ..Mismatch::default() },
        ];
        assert!(
            matches!(&got, Err(SendRejection::MissingDistributions { current_epoch: 3, mismatches }) if *mismatches == expected),
            "{got:?}"
        );
        assert!(plan.appends.is_empty() && plan.group_messages.is_empty());
    }

    #[test]
    fn a_group_send_is_stored_once_with_the_next_group_seq_and_referenced_per_device() {
        let (mut plan, mut sets) = (Plan::default(), sets());
        let mut groups = groups(&[(1, 2), (1, 3), (1, 4)]);
        let got = plan_group_send(&mut plan, &mut sets, &mut groups, &send(3));
        let Ok(Accepted::Stored { committed, group_seq, .. }) = got else { panic!("{got:?}") };
        assert_eq!(group_seq, Some(11));
        assert_eq!(committed.len(), 3);
        assert!(committed.iter().all(|c| c.envelope.content.as_ref() == b"skm"), "pushed with the payload");
        assert_eq!(plan.group_messages.len(), 1, "one stored copy");
        assert_eq!(plan.group_messages[0].refs, 3);
        assert!(plan.appends.iter().all(|a| a.content.is_empty()), "mailboxes hold references only");
        let again = plan_group_send(&mut plan, &mut sets, &mut groups, &send(3));
        assert!(matches!(again, Ok(Accepted::Stored { group_seq: Some(12), .. })));
    }

    #[test]
    fn a_group_send_under_another_epoch_or_from_a_non_member_is_refused() {
        let (mut plan, mut sets) = (Plan::default(), sets());
        let mut groups = groups(&[(1, 2), (1, 3), (1, 4)]);
        let got = plan_group_send(&mut plan, &mut sets, &mut groups, &send(2));
        assert!(matches!(got, Err(SendRejection::StaleEpoch { current_epoch: 3 })), "{got:?}");
        let mut stranger = send(3);
        stranger.group = Uuid::from_u128(0x77);
        let got = plan_group_send(&mut plan, &mut sets, &mut groups, &stranger);
        assert!(matches!(got, Err(SendRejection::NotAMember)), "{got:?}");
    }

    #[test]
    fn a_distribution_refuses_non_member_devices_and_stale_registrations_then_counts() {
        let (mut plan, mut sets) = (Plan::default(), sets());
        let mut groups = groups(&[]);
        let msg = |device_id, registration_id| OutgoingMessage {
            device_id,
            registration_id,
            kind: 1,
            content: Bytes::from_static(b"skdm"),
        };
        let mut item = DistributeItem {
            sender: DeviceKey { account: A, device_id: 1 },
            group: G,
            epoch: 3,
            recipients: vec![
                RecipientBatch { account: A, messages: vec![msg(1, 101)] },
                RecipientBatch { account: B, messages: vec![msg(1, 101), msg(2, 999), msg(7, 1)] },
            ],
            server_ts: 5,
            expires_at: 50,
            idempotency_key: None,
        };
        let got = plan_distribute(&mut plan, &mut sets, &mut groups, &item);
        let Err(SendRejection::GroupDeviceMismatch { mismatches, .. }) = got else { panic!("{got:?}") };
        assert_eq!(mismatches[0], Mismatch { account: A, extra: vec![1], ..Mismatch::default() }, "not to itself");
        assert_eq!(mismatches[1], Mismatch { account: B, extra: vec![7], stale: vec![2], ..Mismatch::default() });

        item.recipients = vec![RecipientBatch { account: B, messages: vec![msg(1, 101), msg(2, 102)] }];
        assert!(plan_distribute(&mut plan, &mut sets, &mut groups, &item).is_ok());
        assert_eq!(plan.distributions.len(), 2);
        let got = plan_group_send(&mut plan, &mut sets, &mut groups, &send(3));
        let Err(SendRejection::MissingDistributions { mismatches, .. }) = got else { panic!("{got:?}") };
        assert_eq!(mismatches, vec![Mismatch { account: C, missing: vec![1], ..Mismatch::default() }]);
    }

    fn group(roles: &[(Uuid, GroupRole)]) -> GroupRecord {
        GroupRecord {
            id: G,
            roster_version: 1,
            epoch: 1,
            seq: 1,
            members: roles
                .iter()
                .map(|&(account, role)| GroupMemberRecord { account, role, added_by: A, joined_at: 0 })
                .collect(),
            title: Vec::new(),
            description: Vec::new(),
            avatar: Vec::new(),
            members_can_add: false,
            max_members: None,
            read_path: false,
        }
    }

    fn change(actor: Uuid, op: GroupOp) -> GroupChange {
        GroupChange { group: G, actor, op, server_ts: 1, expires_at: 2, max_members: 4, read_above: 100 }
    }

    #[test]
    fn roles_decide_who_may_change_what() {
        use GroupRole::{Admin, Member, Owner};
        let base = group(&[(A, Owner), (B, Admin), (C, Member)]);
        let all: HashSet<Uuid> = [A, B, C, Uuid::from_u128(0xd)].into();
        let try_op = |actor, op| apply_change(&mut base.clone(), &change(actor, op), &all).map(|_| ());
        let d = Uuid::from_u128(0xd);
        assert!(matches!(try_op(C, GroupOp::Add(vec![d])), Err(GroupError::Forbidden)));
        assert!(try_op(B, GroupOp::Add(vec![d])).is_ok());
        assert!(matches!(try_op(B, GroupOp::Remove(A)), Err(GroupError::Forbidden)), "admins cannot remove owners");
        assert!(try_op(B, GroupOp::Remove(C)).is_ok());
        assert!(matches!(try_op(C, GroupOp::Remove(B)), Err(GroupError::Forbidden)));
        assert!(try_op(C, GroupOp::Remove(C)).is_ok(), "anyone may leave");
        assert!(matches!(try_op(A, GroupOp::Remove(A)), Err(GroupError::LastOwner)));
        assert!(matches!(try_op(A, GroupOp::SetRole(A, Member)), Err(GroupError::LastOwner)));
        assert!(matches!(try_op(B, GroupOp::SetRole(C, Admin)), Err(GroupError::Forbidden)));
        assert!(matches!(try_op(C, GroupOp::Update(GroupSettings::default())), Err(GroupError::Forbidden)));
        assert!(try_op(B, GroupOp::Update(GroupSettings::default())).is_ok());
        assert!(matches!(try_op(B, GroupOp::Delete), Err(GroupError::Forbidden)));
        assert!(matches!(try_op(d, GroupOp::Remove(d)), Err(GroupError::NotAMember)));
        assert!(matches!(try_op(A, GroupOp::Remove(d)), Err(GroupError::NotInGroup(_))));
        assert!(matches!(try_op(A, GroupOp::Add(vec![C])), Err(GroupError::AlreadyMember(_))));
        assert!(matches!(try_op(A, GroupOp::Add(vec![Uuid::from_u128(0xe)])), Err(GroupError::UnknownAccount(_))));
        let mut full = change(A, GroupOp::Add(vec![d]));
        full.max_members = 3;
        assert!(matches!(apply_change(&mut base.clone(), &full, &all), Err(GroupError::GroupFull(3))));
    }

    #[test]
    fn the_stored_roster_change_is_stable() {
        use GroupRole::{Member, Owner};
        let mut g = group(&[(A, Owner), (B, Member)]);
        let effect = apply_change(&mut g, &change(A, GroupOp::SetRole(B, GroupRole::Admin)), &HashSet::new())
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!("roster_change_role_changed", hex::encode(&effect.change.content));
        let decoded = RosterChange::decode(effect.change.content.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        insta::assert_debug_snapshot!("roster_change_role_changed_decoded", decoded);
    }

    #[test]
    fn a_removal_bumps_the_epoch_and_reaches_the_removed_member() {
        use GroupRole::{Member, Owner};
        let mut g = group(&[(A, Owner), (B, Member), (C, Member)]);
        let effect =
            apply_change(&mut g, &change(A, GroupOp::Remove(B)), &HashSet::new()).unwrap_or_else(|e| panic!("{e}"));
        assert!(effect.epoch_bumped);
        assert_eq!((g.epoch, g.roster_version, g.seq), (2, 2, 2));
        assert_eq!(effect.recipients, vec![A, B, C], "the removed member gets the change");
        let decoded = RosterChange::decode(effect.change.content.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.kind(), roster_change::Kind::Removed);
        assert_eq!(decoded.epoch, 2);
        assert_eq!(decoded.accounts, vec![Bytes::from(B.as_bytes().to_vec())]);
        let effect =
            apply_change(&mut g, &change(A, GroupOp::Add(vec![B])), &[B].into()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!effect.epoch_bumped, "adding does not rotate");
        assert_eq!(g.epoch, 2);
    }
}
