//! The relay's groups, mirroring docs/PROTOCOL.md "Groups": a roster with roles, roster
//! version and epoch, roster-change envelopes to every member device (the removed one too),
//! distribution records per (sender device, recipient device, epoch), group sends checked
//! for membership, epoch and missing distributions, fanned out with a per-group seq, as
//! mailbox references or (for a group switched to it) on the group's stream, which every
//! member device reads and acks by (group, group seq).

use std::collections::{BTreeMap, HashSet};

use hush_wire::api::{GroupInfo, GroupMember, GroupRole, RosterChangeResult};
use hush_wire::frames::{
    DeviceMismatch, DistributeRequest, Envelope, EnvelopeKind, GroupSendRequest, RosterChange, SendError,
    SendErrorCode, SendOk, SendResponse, roster_change, send_response,
};
use uuid::Uuid;

use super::Relay;
use crate::machine::{RestAnswer, RestCall, RestFailure};

/// How the relay delivers a group's messages and roster changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupDelivery {
    /// A mailbox reference per member device (small groups).
    #[default]
    Mailbox,
    /// The group's stream, read by every member device (the sender's too) from its own cursor.
    Stream,
    /// Both at once: the overlap around a switch between the two.
    Both,
}

#[derive(Debug, Clone, Default)]
pub struct RelayGroup {
    pub members: BTreeMap<Uuid, GroupRole>,
    pub roster_version: u64,
    pub epoch: u64,
    pub seq: u64,
    pub title: Vec<u8>,
    pub description: Vec<u8>,
    pub members_can_add: bool,
    /// (sender account, sender device, recipient account, recipient device, epoch).
    pub distributions: HashSet<(Uuid, u32, Uuid, u32, u64)>,
    pub delivery: GroupDelivery,
    /// The group's stream: envelopes (seq 0) by group seq, with the devices that read them.
    pub stream: BTreeMap<u64, (Envelope, Vec<(Uuid, u32)>)>,
}

fn refuse(status: u16, code: &str) -> RestFailure {
    RestFailure { status: Some(status), code: code.into(), message: code.replace('_', " ") }
}

fn error(request_id: u64, code: SendErrorCode, current_epoch: u64, mismatches: Vec<DeviceMismatch>) -> SendResponse {
    let error = SendError { code: code as i32, current_epoch, mismatches, ..Default::default() };
    SendResponse { request_id, result: Some(send_response::Result::Error(error)) }
}

fn proto_role(r: GroupRole) -> hush_wire::frames::GroupRole {
    match r {
        GroupRole::Owner => hush_wire::frames::GroupRole::Owner,
        GroupRole::Admin => hush_wire::frames::GroupRole::Admin,
        GroupRole::Member => hush_wire::frames::GroupRole::Member,
    }
}

impl Relay {
    fn group_info(&self, id: Uuid) -> GroupInfo {
        let g = &self.groups[&id];
        let mut members: Vec<GroupMember> = g
            .members
            .iter()
            .map(|(a, r)| GroupMember { account_id: *a, role: *r, added_by: *a, joined_at: 0 })
            .collect();
        members.sort_by_key(|m| (std::cmp::Reverse(m.role), m.account_id));
        GroupInfo {
            group_id: id,
            roster_version: g.roster_version,
            epoch: g.epoch,
            seq: g.seq,
            members,
            title: hush_wire::api::B64(g.title.clone()),
            description: hush_wire::api::B64(g.description.clone()),
            avatar: Default::default(),
            members_can_add: g.members_can_add,
            max_members: 1000,
        }
    }

    /// Writes a roster change to every device of the members and of `also` (a removed member).
    fn roster_change(
        &mut self,
        id: Uuid,
        kind: roster_change::Kind,
        actor: Uuid,
        accounts: &[Uuid],
        role: Option<GroupRole>,
        also: &[Uuid],
    ) -> RosterChangeResult {
        let now = self.now;
        let g = self.groups.get_mut(&id).unwrap_or_else(|| panic!("no group"));
        g.roster_version += 1;
        g.seq += 1;
        let change = RosterChange {
            group_id: id.as_bytes().to_vec().into(),
            kind: kind as i32,
            actor: actor.as_bytes().to_vec().into(),
            accounts: accounts.iter().map(|a| a.as_bytes().to_vec().into()).collect(),
            role: role.map(proto_role).unwrap_or_default() as i32,
            roster_version: g.roster_version,
            epoch: g.epoch,
            server_timestamp: now,
        };
        let (group_seq, result) = (
            g.seq,
            RosterChangeResult { group_id: id, roster_version: g.roster_version, epoch: g.epoch, group_seq: g.seq },
        );
        let mut targets: Vec<Uuid> = g.members.keys().copied().collect();
        targets.extend(also.iter().copied().filter(|a| !g.members.contains_key(a)));
        let devices: Vec<(Uuid, u32)> =
            targets.into_iter().flat_map(|a| self.accounts[&a].devices.keys().map(move |d| (a, *d))).collect();
        let env = Envelope {
            seq: 0,
            server_timestamp: now,
            kind: EnvelopeKind::RosterChange as i32,
            content: prost::Message::encode_to_vec(&change).into(),
            group_id: id.as_bytes().to_vec().into(),
            group_seq,
        };
        self.fan_out(id, env, &devices, &devices);
        result
    }

    /// Writes a group envelope (seq 0) the way the group is delivered: a mailbox reference
    /// for each of `mailbox` and/or one stream entry read by each of `stream`.
    fn fan_out(&mut self, group: Uuid, env: Envelope, mailbox: &[(Uuid, u32)], stream: &[(Uuid, u32)]) {
        let delivery = self.groups[&group].delivery;
        if delivery != GroupDelivery::Stream {
            for (a, d) in mailbox {
                self.next_seq += 1;
                let seq = self.next_seq;
                self.device_mut(*a, *d).mailbox.insert(seq, Envelope { seq, ..env.clone() });
            }
        }
        if delivery != GroupDelivery::Mailbox {
            for (a, d) in stream {
                self.device_mut(*a, *d).stream.insert((group, env.group_seq));
            }
            let g = self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group"));
            g.stream.insert(env.group_seq, (env, stream.to_vec()));
        }
    }

    /// From now on the group is delivered by its stream (as above hushd's fan-out threshold).
    pub fn stream_group(&mut self, group: Uuid) {
        self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group")).delivery = GroupDelivery::Stream;
    }

    /// From now on the group is delivered both ways (the overlap around a switch).
    pub fn deliver_group_both_ways(&mut self, group: Uuid) {
        self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group")).delivery = GroupDelivery::Both;
    }

    /// Writes a mailbox reference to a stream entry for every device that reads it but the
    /// sender's (as a switch back to the mailbox may), after what the mailboxes hold.
    pub fn reference_in_mailboxes(&mut self, group: Uuid, group_seq: u64, sender: (Uuid, u32)) {
        let (env, readers) = self.groups[&group].stream[&group_seq].clone();
        for (a, d) in readers.into_iter().filter(|r| *r != sender) {
            self.next_seq += 1;
            let seq = self.next_seq;
            self.device_mut(a, d).mailbox.insert(seq, Envelope { seq, ..env.clone() });
        }
    }

    pub(super) fn group_rest(&mut self, caller: Uuid, call: RestCall) -> Result<RestAnswer, RestFailure> {
        let not_member = || refuse(404, "not_a_member");
        let role_of = |relay: &Relay, g: Uuid| relay.groups.get(&g).and_then(|g| g.members.get(&caller).copied());
        match call {
            RestCall::CreateGroup(req) => {
                for m in &req.members {
                    if !self.accounts.contains_key(m) {
                        return Err(refuse(404, "unknown_account"));
                    }
                }
                let id = Uuid::new_v4();
                let mut g = RelayGroup { title: req.title.0, description: req.description.0, ..Default::default() };
                g.members.insert(caller, GroupRole::Owner);
                for m in &req.members {
                    g.members.entry(*m).or_insert(GroupRole::Member);
                }
                self.groups.insert(id, g);
                let others: Vec<Uuid> = req.members.iter().copied().filter(|m| *m != caller).collect();
                self.roster_change(id, roster_change::Kind::Created, caller, &others, None, &[]);
                Ok(RestAnswer::Group(self.group_info(id)))
            }
            RestCall::GetGroup(id) => {
                role_of(self, id).ok_or_else(not_member)?;
                Ok(RestAnswer::Group(self.group_info(id)))
            }
            RestCall::UpdateGroup { group, request } => {
                let role = role_of(self, group).ok_or_else(not_member)?;
                if role == GroupRole::Member {
                    return Err(refuse(403, "forbidden"));
                }
                let g = self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group"));
                if let Some(t) = request.title {
                    g.title = t.0;
                }
                if let Some(d) = request.description {
                    g.description = d.0;
                }
                if let Some(m) = request.members_can_add {
                    g.members_can_add = m;
                }
                let r = self.roster_change(group, roster_change::Kind::SettingsChanged, caller, &[], None, &[]);
                Ok(RestAnswer::RosterChange(r))
            }
            RestCall::AddMembers { group, request } => {
                let role = role_of(self, group).ok_or_else(not_member)?;
                if role == GroupRole::Member && !self.groups[&group].members_can_add {
                    return Err(refuse(403, "forbidden"));
                }
                for m in &request.members {
                    if !self.accounts.contains_key(m) {
                        return Err(refuse(404, "unknown_account"));
                    }
                    if self.groups[&group].members.contains_key(m) {
                        return Err(refuse(409, "already_member"));
                    }
                }
                let g = self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group"));
                for m in &request.members {
                    g.members.insert(*m, GroupRole::Member);
                }
                let r = self.roster_change(group, roster_change::Kind::Added, caller, &request.members, None, &[]);
                Ok(RestAnswer::RosterChange(r))
            }
            RestCall::RemoveMember { group, account } => {
                let role = role_of(self, group).ok_or_else(not_member)?;
                let target = role_of_account(self, group, account).ok_or_else(|| refuse(404, "not_in_group"))?;
                let leaving = account == caller;
                if !leaving && (role == GroupRole::Member || target == GroupRole::Owner) {
                    return Err(refuse(403, "forbidden"));
                }
                let g = self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group"));
                if target == GroupRole::Owner && g.members.values().filter(|r| **r == GroupRole::Owner).count() == 1 {
                    return Err(refuse(409, "last_owner"));
                }
                g.members.remove(&account);
                g.epoch += 1;
                let kind = if leaving { roster_change::Kind::Left } else { roster_change::Kind::Removed };
                let r = self.roster_change(group, kind, caller, &[account], None, &[account]);
                Ok(RestAnswer::RosterChange(r))
            }
            RestCall::SetRole { group, account, request } => {
                let role = role_of(self, group).ok_or_else(not_member)?;
                if role != GroupRole::Owner {
                    return Err(refuse(403, "forbidden"));
                }
                role_of_account(self, group, account).ok_or_else(|| refuse(404, "not_in_group"))?;
                self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group")).members.insert(account, request.role);
                let kind = roster_change::Kind::RoleChanged;
                let r = self.roster_change(group, kind, caller, &[account], Some(request.role), &[]);
                Ok(RestAnswer::RosterChange(r))
            }
            // Deleting is tested against the real server (client-core/tests/it/groups.rs).
            RestCall::DeleteGroup(_) => Err(refuse(501, "not_in_the_relay")),
            _ => unreachable!("not a group call"),
        }
    }

    /// Every member device but the sender's.
    fn member_devices(&self, group: Uuid, except: (Uuid, u32)) -> Vec<(Uuid, u32)> {
        let g = &self.groups[&group];
        let mut out = Vec::new();
        for account in g.members.keys() {
            for d in self.accounts[account].devices.keys() {
                if (*account, *d) != except {
                    out.push((*account, *d));
                }
            }
        }
        out
    }

    pub(super) fn group_send(&mut self, sender: Uuid, device: u32, req: GroupSendRequest) -> SendResponse {
        let key = (sender, device, req.idempotency_key.to_vec());
        if !req.idempotency_key.is_empty()
            && let Some(first) = self.group_sends.get(&key)
        {
            return SendResponse { request_id: req.request_id, ..first.clone() };
        }
        let Ok(group) = Uuid::from_slice(&req.group_id) else {
            return error(req.request_id, SendErrorCode::InvalidRequest, 0, vec![]);
        };
        let Some(g) = self.groups.get(&group).filter(|g| g.members.contains_key(&sender)) else {
            return error(req.request_id, SendErrorCode::NotAMember, 0, vec![]);
        };
        let epoch = g.epoch;
        if req.epoch != epoch {
            return error(req.request_id, SendErrorCode::StaleEpoch, epoch, vec![]);
        }
        let targets = self.member_devices(group, (sender, device));
        let readers = self.member_devices(group, (Uuid::nil(), 0));
        let g = &self.groups[&group];
        let mut missing: BTreeMap<Uuid, Vec<u32>> = BTreeMap::new();
        for (a, d) in &targets {
            if !g.distributions.contains(&(sender, device, *a, *d, epoch)) {
                missing.entry(*a).or_default().push(*d);
            }
        }
        if !missing.is_empty() {
            let mismatches = missing
                .into_iter()
                .map(|(a, m)| DeviceMismatch {
                    account_id: a.as_bytes().to_vec().into(),
                    missing: m,
                    ..Default::default()
                })
                .collect();
            return error(req.request_id, SendErrorCode::MissingDistributions, epoch, mismatches);
        }
        let g = self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group"));
        g.seq += 1;
        let group_seq = g.seq;
        self.group_ciphertexts.push((group, group_seq, req.content.to_vec()));
        let env = Envelope {
            seq: 0,
            server_timestamp: self.now,
            kind: EnvelopeKind::GroupMessage as i32,
            content: req.content.clone(),
            group_id: req.group_id.clone(),
            group_seq,
        };
        self.fan_out(group, env, &targets, &readers);
        let ok = SendOk { server_timestamp: self.now, group_seq };
        let resp = SendResponse { request_id: req.request_id, result: Some(send_response::Result::Ok(ok)) };
        if !req.idempotency_key.is_empty() {
            self.group_sends.insert(key, resp.clone());
        }
        resp
    }

    pub(super) fn distribute(&mut self, sender: Uuid, device: u32, req: DistributeRequest) -> SendResponse {
        let Ok(group) = Uuid::from_slice(&req.group_id) else {
            return error(req.request_id, SendErrorCode::InvalidRequest, 0, vec![]);
        };
        let Some(g) = self.groups.get(&group).filter(|g| g.members.contains_key(&sender)) else {
            return error(req.request_id, SendErrorCode::NotAMember, 0, vec![]);
        };
        let epoch = g.epoch;
        if req.epoch != epoch {
            return error(req.request_id, SendErrorCode::StaleEpoch, epoch, vec![]);
        }
        let mut mismatches = Vec::new();
        for r in &req.recipients {
            let account = Uuid::from_slice(&r.account_id).unwrap_or_else(|e| panic!("{e}"));
            let mut m = DeviceMismatch { account_id: r.account_id.clone(), ..Default::default() };
            for x in &r.messages {
                let member = g.members.contains_key(&account);
                match self.accounts.get(&account).and_then(|a| a.devices.get(&x.device_id)) {
                    Some(d) if member && (account, x.device_id) != (sender, device) => {
                        if d.keys.registration_id != x.registration_id {
                            m.stale.push(x.device_id);
                        }
                    }
                    _ => m.extra.push(x.device_id),
                }
            }
            if !(m.extra.is_empty() && m.stale.is_empty()) {
                mismatches.push(m);
            }
        }
        if !mismatches.is_empty() {
            return error(req.request_id, SendErrorCode::DeviceMismatch, epoch, mismatches);
        }
        for r in req.recipients {
            let account = Uuid::from_slice(&r.account_id).unwrap_or_else(|e| panic!("{e}"));
            for x in r.messages {
                self.groups.get_mut(&group).unwrap_or_else(|| panic!("no group")).distributions.insert((
                    sender,
                    device,
                    account,
                    x.device_id,
                    epoch,
                ));
                let env =
                    Envelope { server_timestamp: self.now, kind: x.kind, content: x.content, ..Envelope::default() };
                if self.hold_distributions_to == Some((account, x.device_id)) {
                    self.held_distributions.push(env);
                    continue;
                }
                self.next_seq += 1;
                let env = Envelope { seq: self.next_seq, ..env };
                let seq = self.next_seq;
                self.device_mut(account, x.device_id).mailbox.insert(seq, env);
            }
        }
        let ok = SendOk { server_timestamp: self.now, group_seq: 0 };
        SendResponse { request_id: req.request_id, result: Some(send_response::Result::Ok(ok)) }
    }

    /// Delivers the distributions kept back for `hold_distributions_to`, after everything
    /// already in its mailbox.
    pub fn release_distributions(&mut self) {
        let Some((account, device)) = self.hold_distributions_to.take() else { return };
        for env in std::mem::take(&mut self.held_distributions) {
            self.next_seq += 1;
            let env = Envelope { seq: self.next_seq, ..env };
            let seq = self.next_seq;
            self.device_mut(account, device).mailbox.insert(seq, env);
        }
    }
}

fn role_of_account(relay: &Relay, group: Uuid, account: Uuid) -> Option<GroupRole> {
    relay.groups.get(&group).and_then(|g| g.members.get(&account).copied())
}
