//! Groups: the roster through the server's REST endpoints, the local group state, and the
//! group's title and description encrypted with its master key. Sending is in `send.rs`
//! (sender keys, distributions, rotation), receiving in `receive.rs` (group messages, roster
//! changes, distributions, held messages).
//!
//! Group operations the app waits for (create, add, remove, leave, role, title, decline) are
//! REST calls: the call's id is returned at once and the outcome comes out of
//! [`Machine::take_completions`] when the server has answered.

mod receive;
mod send;

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hush_wire::api::{
    AddMembersRequest, CreateGroupRequest, GroupInfo as ApiGroupInfo, SetRoleRequest, UpdateGroupRequest,
};
use hush_wire::limits::{MAX_GROUP_MEMBERS, MAX_GROUP_TITLE_BYTES};
use uuid::Uuid;

use super::{Machine, Purpose, RestAnswer, RestCall, RestFailure};
use crate::error::MachineError;
use crate::store::{Batch, ContactRow, GroupRow, MemberRow, NewOutbox, OutboxKind};
use crate::types::{ConversationId, Event, GroupInfo, GroupMemberInfo, GroupRole, GroupState, MessageId};

pub(super) use send::GroupDist;

/// Bytes of a group's master key.
pub const MASTER_KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// Named value: the master key and title of a group being created.
const PENDING_KEY: &str = "group_create_pending";
const TITLE_LABEL: &[u8] = b"hush-group-title-v1";
const DESCRIPTION_LABEL: &[u8] = b"hush-group-description-v1";

/// Encrypts a group blob (title, description) with the group's master key: AES-256-GCM-SIV
/// with a random nonce, `label` as associated data; the blob is `nonce || ciphertext`. An
/// empty plaintext gives an empty blob.
pub fn seal_blob<R: rand::Rng + rand::CryptoRng>(key: &[u8], label: &[u8], plain: &[u8], rng: &mut R) -> Vec<u8> {
    if plain.is_empty() {
        return Vec::new();
    }
    let Ok(cipher) = Aes256GcmSiv::new_from_slice(key) else { return Vec::new() };
    let mut nonce = [0u8; NONCE_BYTES];
    rng.fill_bytes(&mut nonce);
    let Ok(ct) = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: label }) else {
        return Vec::new();
    };
    [nonce.as_slice(), &ct].concat()
}

/// Opens a blob made by [`seal_blob`]; `None` if the key or the label is wrong or it was
/// changed.
pub fn open_blob(key: &[u8], label: &[u8], blob: &[u8]) -> Option<Vec<u8>> {
    if blob.is_empty() {
        return Some(Vec::new());
    }
    if blob.len() < NONCE_BYTES {
        return None;
    }
    let cipher = Aes256GcmSiv::new_from_slice(key).ok()?;
    let (nonce, ct) = blob.split_at(NONCE_BYTES);
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: label }).ok()
}

/// A random (version 4) UUID from `rng`.
pub(super) fn random_uuid(rng: &mut impl rand::Rng) -> Uuid {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// What a finished group operation gives the app.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupOutcome {
    /// A group was created with this id.
    Created(Uuid),
    /// The change was made.
    Done,
}

/// What a group REST call was for.
#[derive(Debug, Clone)]
pub(crate) enum GroupPurpose {
    Create {
        master_key: Vec<u8>,
        title: String,
    },
    Change {
        group: Uuid,
        added: Vec<Uuid>,
        removed: Option<Uuid>,
        role: Option<(Uuid, GroupRole)>,
        title: Option<String>,
    },
    /// The group's `members_can_add` setting.
    Settings {
        group: Uuid,
        members_can_add: bool,
    },
    Leave(Uuid),
    Fetch(Uuid),
}

impl GroupRow {
    /// A group learned from a roster change or a distribution, before its details are known.
    pub(super) fn placeholder(id: Uuid, state: GroupState, added_by: Option<Uuid>, distribution_id: Uuid) -> Self {
        GroupRow {
            id,
            master_key: Vec::new(),
            title: String::new(),
            description: String::new(),
            title_blob: Vec::new(),
            description_blob: Vec::new(),
            members: Vec::new(),
            members_can_add: false,
            roster_version: 0,
            epoch: 0,
            state,
            added_by,
            declined: false,
            distribution_id,
            key_epoch: None,
            distributed: Default::default(),
        }
    }

    /// Decrypts title and description once the master key is known.
    pub(super) fn decrypt_blobs(&mut self) {
        if self.master_key.len() != MASTER_KEY_BYTES {
            return;
        }
        if let Some(t) = open_blob(&self.master_key, TITLE_LABEL, &self.title_blob) {
            self.title = String::from_utf8_lossy(&t).into_owned();
        }
        if let Some(d) = open_blob(&self.master_key, DESCRIPTION_LABEL, &self.description_blob) {
            self.description = String::from_utf8_lossy(&d).into_owned();
        }
    }

    /// Takes roster, settings and blobs from the server's view (when it is not older).
    pub(super) fn apply_info(&mut self, info: &ApiGroupInfo) {
        if info.roster_version < self.roster_version {
            return;
        }
        self.roster_version = info.roster_version;
        self.epoch = self.epoch.max(info.epoch);
        self.members = info.members.iter().map(|m| MemberRow { account: m.account_id, role: m.role }).collect();
        self.members_can_add = info.members_can_add;
        self.title_blob = info.title.0.clone();
        self.description_blob = info.description.0.clone();
        self.decrypt_blobs();
    }
}

fn role_rank(r: GroupRole) -> u8 {
    match r {
        GroupRole::Owner => 0,
        GroupRole::Admin => 1,
        GroupRole::Member => 2,
    }
}

impl Machine {
    /// Creates a group titled `title` with `members` (contacts; this account becomes its
    /// owner). Returns the id of the operation; [`Machine::take_completions`] gives
    /// [`GroupOutcome::Created`] once the server has answered, and the new members get this
    /// device's sender key (with the group's key and title) at once.
    pub async fn create_group<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        title: &str,
        members: &[ContactRow],
        rng: &mut R,
    ) -> Result<u64, MachineError> {
        if title.len() > MAX_GROUP_TITLE_BYTES - 64 {
            return Err(MachineError::Invalid(format!(
                "a group title has at most {} bytes",
                MAX_GROUP_TITLE_BYTES - 64
            )));
        }
        if members.len() + 1 > MAX_GROUP_MEMBERS as usize {
            return Err(MachineError::Invalid(format!("a group has at most {MAX_GROUP_MEMBERS} members")));
        }
        let mut master_key = vec![0u8; MASTER_KEY_BYTES];
        rng.fill_bytes(&mut master_key);
        let mut ids: Vec<Uuid> =
            members.iter().map(|c| c.account_id).filter(|a| *a != self.account.account_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let title_blob = seal_blob(&master_key, TITLE_LABEL, title.as_bytes(), rng);
        let request =
            CreateGroupRequest { members: ids, title: hush_wire::api::B64(title_blob.clone()), ..Default::default() };
        // Kept before the call: should this device stop before the answer, the roster change
        // that announces the group still finds its key (see `take_pending_key`).
        let mut batch = Batch::default();
        batch.values.insert(PENDING_KEY.to_owned(), Some([master_key.as_slice(), &title_blob].concat()));
        self.store.commit(batch).await?;
        let purpose = GroupPurpose::Create { master_key, title: title.to_owned() };
        Ok(self.rest_call(RestCall::CreateGroup(request), Purpose::Group(purpose)))
    }

    /// The key of the group this device asked the server to create last, for a group without
    /// a key here whose encrypted title is the one that request carried (the random nonce
    /// makes it unique): the answer was lost, the group was made. Removed once used.
    async fn take_pending_key(&self, batch: &mut Batch, group: &mut GroupRow) -> Result<bool, MachineError> {
        if !group.master_key.is_empty() || group.title_blob.is_empty() {
            return Ok(false);
        }
        let Some(v) = self.store.value(PENDING_KEY).await? else { return Ok(false) };
        if v.len() <= MASTER_KEY_BYTES || v[MASTER_KEY_BYTES..] != group.title_blob[..] {
            return Ok(false);
        }
        group.master_key = v[..MASTER_KEY_BYTES].to_vec();
        group.decrypt_blobs();
        batch.values.insert(PENDING_KEY.to_owned(), None);
        Ok(true)
    }

    /// Adds contacts to a group (as members). Returns the operation id.
    pub async fn add_members(&mut self, group: Uuid, members: &[ContactRow]) -> Result<u64, MachineError> {
        let g = self.active_group(group).await?;
        let added: Vec<Uuid> = members.iter().map(|c| c.account_id).filter(|a| g.role_of(*a).is_none()).collect();
        if added.is_empty() {
            return Err(MachineError::Invalid("everyone named is a member already".into()));
        }
        let call = RestCall::AddMembers { group, request: AddMembersRequest { members: added.clone() } };
        Ok(self.rest_call(
            call,
            Purpose::Group(GroupPurpose::Change { group, added, removed: None, role: None, title: None }),
        ))
    }

    /// Removes a member. Returns the operation id. Every remaining member makes a new sender
    /// key before its next message (the server's epoch enforces it).
    pub async fn remove_member(&mut self, group: Uuid, account: Uuid) -> Result<u64, MachineError> {
        self.active_group(group).await?;
        if account == self.account.account_id {
            return self.leave_group(group).await;
        }
        let call = RestCall::RemoveMember { group, account };
        Ok(self.rest_call(
            call,
            Purpose::Group(GroupPurpose::Change {
                group,
                added: vec![],
                removed: Some(account),
                role: None,
                title: None,
            }),
        ))
    }

    /// Leaves a group (an invite too: that is declining it). Returns the operation id.
    pub async fn leave_group(&mut self, group: Uuid) -> Result<u64, MachineError> {
        let Some(g) = self.store.group(group).await? else {
            return Err(MachineError::UnknownGroup(ConversationId::group_name(group)));
        };
        if g.state == GroupState::Left {
            return Err(MachineError::Invalid("this account is not a member of the group any more".into()));
        }
        let call = RestCall::RemoveMember { group, account: self.account.account_id };
        Ok(self.rest_call(call, Purpose::Group(GroupPurpose::Leave(group))))
    }

    /// Deletes the group for every member (owners only): each member device gets a "deleted"
    /// roster change, and the group ends here as if left. Returns the operation id.
    pub async fn delete_group(&mut self, group: Uuid) -> Result<u64, MachineError> {
        self.active_group(group).await?;
        Ok(self.rest_call(RestCall::DeleteGroup(group), Purpose::Group(GroupPurpose::Leave(group))))
    }

    /// Gives a member another role (owners only). Returns the operation id.
    pub async fn set_role(&mut self, group: Uuid, account: Uuid, role: GroupRole) -> Result<u64, MachineError> {
        self.active_group(group).await?;
        let call = RestCall::SetRole { group, account, request: SetRoleRequest { role } };
        let purpose =
            GroupPurpose::Change { group, added: vec![], removed: None, role: Some((account, role)), title: None };
        Ok(self.rest_call(call, Purpose::Group(purpose)))
    }

    /// Changes the group's title (admins and owners). Returns the operation id.
    pub async fn set_group_title<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        group: Uuid,
        title: &str,
        rng: &mut R,
    ) -> Result<u64, MachineError> {
        let g = self.active_group(group).await?;
        if g.master_key.len() != MASTER_KEY_BYTES {
            return Err(MachineError::Invalid("the group's key has not arrived on this device yet".into()));
        }
        let blob = seal_blob(&g.master_key, TITLE_LABEL, title.as_bytes(), rng);
        let request = UpdateGroupRequest { title: Some(hush_wire::api::B64(blob)), ..Default::default() };
        let purpose =
            GroupPurpose::Change { group, added: vec![], removed: None, role: None, title: Some(title.to_owned()) };
        Ok(self.rest_call(RestCall::UpdateGroup { group, request }, Purpose::Group(purpose)))
    }

    /// Lets members (not only admins and owners) add others, or stops it (admins and owners).
    /// Returns the operation id.
    pub async fn set_members_can_add(&mut self, group: Uuid, members_can_add: bool) -> Result<u64, MachineError> {
        self.active_group(group).await?;
        let request = UpdateGroupRequest { members_can_add: Some(members_can_add), ..Default::default() };
        let purpose = GroupPurpose::Settings { group, members_can_add };
        Ok(self.rest_call(RestCall::UpdateGroup { group, request }, Purpose::Group(purpose)))
    }

    /// Accepts an invite: the group and what arrived meanwhile appear.
    pub async fn accept_invite(&mut self, group: Uuid) -> Result<(), MachineError> {
        let Some(mut g) = self.store.group(group).await? else {
            return Err(MachineError::UnknownGroup(ConversationId::group_name(group)));
        };
        if g.state != GroupState::Invited {
            return Err(MachineError::Invalid("there is no invite to this group".into()));
        }
        g.state = GroupState::Active;
        let event = group_event(&g);
        let mut batch = Batch::default();
        batch.groups.insert(group, Some(g));
        self.store.commit(batch).await?;
        self.events.push_back(event);
        Ok(())
    }

    /// Declines an invite: leaves the group. Returns the operation id.
    pub async fn decline_invite(&mut self, group: Uuid) -> Result<u64, MachineError> {
        match self.store.group(group).await? {
            Some(mut g) if g.state == GroupState::Invited => {
                g.declined = true;
                let mut batch = Batch::default();
                batch.groups.insert(group, Some(g));
                self.store.commit(batch).await?;
                self.leave_group(group).await
            }
            Some(_) => Err(MachineError::Invalid("there is no invite to this group".into())),
            None => Err(MachineError::UnknownGroup(ConversationId::group_name(group))),
        }
    }

    /// The groups this account is a member of (not invites, not groups it left).
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, MachineError> {
        self.groups_in(GroupState::Active).await
    }

    /// The groups this account was invited to and has not accepted or declined.
    pub async fn invites(&self) -> Result<Vec<GroupInfo>, MachineError> {
        self.groups_in(GroupState::Invited).await
    }

    async fn groups_in(&self, state: GroupState) -> Result<Vec<GroupInfo>, MachineError> {
        let mut out = Vec::new();
        for g in self.store.groups().await?.into_iter().filter(|g| g.state == state) {
            out.push(self.public_group(g).await?);
        }
        Ok(out)
    }

    /// A group as this device knows it.
    pub async fn group_info(&self, group: Uuid) -> Result<Option<GroupInfo>, MachineError> {
        match self.store.group(group).await? {
            Some(g) => Ok(Some(self.public_group(g).await?)),
            None => Ok(None),
        }
    }

    /// Finished group operations: (operation id, outcome), oldest first.
    pub fn take_completions(&mut self) -> Vec<(u64, Result<GroupOutcome, MachineError>)> {
        self.completions.drain(..).collect()
    }

    async fn public_group(&self, g: GroupRow) -> Result<GroupInfo, MachineError> {
        let mut members = Vec::new();
        let mut rows = g.members.clone();
        rows.sort_by_key(|m| (role_rank(m.role), m.account));
        for m in rows {
            let username = self.username_of(m.account).await?;
            members.push(GroupMemberInfo { username, account_id: m.account, role: m.role });
        }
        Ok(GroupInfo {
            group: ConversationId::group_name(g.id),
            group_id: g.id,
            title: g.title,
            description: g.description,
            state: g.state,
            members,
            roster_version: g.roster_version,
            epoch: g.epoch,
            members_can_add: g.members_can_add,
        })
    }

    async fn active_group(&self, group: Uuid) -> Result<GroupRow, MachineError> {
        match self.store.group(group).await? {
            Some(g) if g.state == GroupState::Active => Ok(g),
            Some(g) if g.state == GroupState::Invited => {
                Err(MachineError::Invalid("accept the invite to this group first".into()))
            }
            Some(_) => Err(MachineError::Invalid("this account is not a member of the group any more".into())),
            None => Err(MachineError::UnknownGroup(ConversationId::group_name(group))),
        }
    }

    /// Queues this device's sender key to every device of `accounts` (an outbox entry, so it
    /// goes before any later message of this device).
    pub(super) fn queue_distribution(
        &self,
        batch: &mut Batch,
        group: Uuid,
        accounts: &[Uuid],
        rng: &mut impl rand::Rng,
    ) {
        let content: Vec<u8> = accounts.iter().flat_map(|a| a.as_bytes().to_vec()).collect();
        batch.outbox_add.push(NewOutbox {
            message_id: MessageId::random(rng),
            conversation: ConversationId::Group(group),
            kind: OutboxKind::GroupDistribute,
            content,
        });
    }

    /// The answer to a group REST call.
    pub(super) async fn group_rest_response<R: rand::Rng + rand::CryptoRng>(
        &mut self,
        id: u64,
        purpose: GroupPurpose,
        answer: Result<RestAnswer, RestFailure>,
        _now: u64,
        rng: &mut R,
    ) -> Result<(), MachineError> {
        let me = self.account.account_id;
        let outcome = match (purpose, answer) {
            (GroupPurpose::Create { master_key, title }, Ok(RestAnswer::Group(info))) => {
                // The roster change announcing the group may have come first: keep what it made.
                let mut g = match self.store.group(info.group_id).await? {
                    Some(g) => g,
                    None => GroupRow::placeholder(info.group_id, GroupState::Active, Some(me), random_uuid(rng)),
                };
                g.state = GroupState::Active;
                g.apply_info(&info);
                if g.master_key.is_empty() {
                    g.master_key = master_key;
                }
                g.decrypt_blobs();
                if g.title.is_empty() {
                    g.title = title;
                }
                let mut batch = Batch::default();
                batch.values.insert(PENDING_KEY.to_owned(), None);
                let others: Vec<Uuid> = info.members.iter().map(|m| m.account_id).collect();
                self.queue_distribution(&mut batch, g.id, &others, rng);
                let event = group_event(&g);
                batch.groups.insert(g.id, Some(g));
                self.store.commit(batch).await?;
                self.events.push_back(event);
                Ok(GroupOutcome::Created(info.group_id))
            }
            (GroupPurpose::Change { group, added, removed, role, title }, Ok(RestAnswer::RosterChange(r))) => {
                if let Some(mut g) = self.store.group(group).await? {
                    g.epoch = g.epoch.max(r.epoch);
                    g.roster_version = g.roster_version.max(r.roster_version);
                    // The answer shows the new role at once, as it shows an addition.
                    if let Some((account, new_role)) = role {
                        for m in g.members.iter_mut().filter(|m| m.account == account) {
                            m.role = new_role;
                        }
                    }
                    for a in &added {
                        if g.role_of(*a).is_none() {
                            g.members.push(MemberRow { account: *a, role: GroupRole::Member });
                        }
                    }
                    // The next message's key must not reach the removed member, even before the
                    // roster change arrives.
                    if let Some(r) = removed {
                        g.members.retain(|m| m.account != r);
                        g.distributed.retain(|(a, _)| *a != r);
                    }
                    if let Some(t) = title {
                        g.title = t;
                    }
                    let mut batch = Batch::default();
                    if !added.is_empty() {
                        self.queue_distribution(&mut batch, group, &added, rng);
                    }
                    batch.groups.insert(group, Some(g));
                    self.store.commit(batch).await?;
                }
                Ok(GroupOutcome::Done)
            }
            (GroupPurpose::Settings { group, members_can_add }, Ok(RestAnswer::RosterChange(r))) => {
                if let Some(mut g) = self.store.group(group).await? {
                    g.epoch = g.epoch.max(r.epoch);
                    g.roster_version = g.roster_version.max(r.roster_version);
                    g.members_can_add = members_can_add;
                    let mut batch = Batch::default();
                    batch.groups.insert(group, Some(g));
                    self.store.commit(batch).await?;
                }
                Ok(GroupOutcome::Done)
            }
            (GroupPurpose::Leave(group), Ok(_)) => {
                self.mark_left(group).await?;
                Ok(GroupOutcome::Done)
            }
            (GroupPurpose::Fetch(group), Ok(RestAnswer::Group(info))) => {
                if let Some(mut g) = self.store.group(group).await? {
                    let before = g.clone();
                    g.apply_info(&info);
                    let mut batch = Batch::default();
                    if self.take_pending_key(&mut batch, &mut g).await? {
                        // This device made the group: the members still need its key.
                        let members: Vec<Uuid> = g.members.iter().map(|m| m.account).collect();
                        self.queue_distribution(&mut batch, group, &members, rng);
                    }
                    if g != before {
                        let event = group_event(&g);
                        batch.groups.insert(group, Some(g));
                        self.store.commit(batch).await?;
                        if event_visible(&before) {
                            self.events.push_back(event);
                        }
                    }
                }
                return Ok(());
            }
            (GroupPurpose::Fetch(group), Err(f)) => {
                if f.status == Some(404) {
                    self.mark_left(group).await?;
                }
                return Ok(());
            }
            (GroupPurpose::Leave(group), Err(f)) if f.status == Some(404) => {
                // Not a member already (removed meanwhile): the outcome the caller wanted.
                self.mark_left(group).await?;
                Ok(GroupOutcome::Done)
            }
            (_, Err(f)) => Err(MachineError::Rest(f)),
            (_, Ok(_)) => Err(MachineError::Content("unexpected answer from the server".into())),
        };
        self.completions.push_back((id, outcome));
        Ok(())
    }

    async fn mark_left(&mut self, group: Uuid) -> Result<(), MachineError> {
        let Some(mut g) = self.store.group(group).await? else { return Ok(()) };
        if g.state == GroupState::Left {
            return Ok(());
        }
        g.state = GroupState::Left;
        let event = group_event(&g);
        let mut batch = Batch::default();
        batch.groups.insert(group, Some(g));
        self.store.commit(batch).await?;
        self.events.push_back(event);
        Ok(())
    }

    /// Asks the server for a group's roster and settings.
    pub(super) fn fetch_group(&mut self, group: Uuid) {
        self.rest_call(RestCall::GetGroup(group), Purpose::Group(GroupPurpose::Fetch(group)));
    }
}

/// Whether events about a group are shown (not while it is an invite).
fn event_visible(g: &GroupRow) -> bool {
    g.state != GroupState::Invited
}

pub(super) fn group_event(g: &GroupRow) -> Event {
    Event::GroupUpdated { group: ConversationId::group_name(g.id), title: g.title.clone(), state: g.state }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_group_record_has_a_stable_json_form() {
        let mut g = GroupRow::placeholder(
            Uuid::from_bytes([1; 16]),
            GroupState::Active,
            Some(Uuid::from_bytes([2; 16])),
            Uuid::from_bytes([3; 16]),
        );
        g.master_key = vec![4; 32];
        g.title = "friends".into();
        g.title_blob = vec![5; 4];
        g.members = vec![MemberRow { account: Uuid::from_bytes([2; 16]), role: GroupRole::Owner }];
        g.roster_version = 2;
        g.epoch = 1;
        g.key_epoch = Some(1);
        g.distributed.insert((Uuid::from_bytes([2; 16]), 1));
        insta::assert_json_snapshot!(g);
        let entry = receive::system_entry_sample();
        insta::assert_json_snapshot!("system_entry", entry);
    }

    #[test]
    fn blobs_open_with_the_key_and_label_only() {
        let key = [7u8; 32];
        let blob = seal_blob(&key, TITLE_LABEL, b"friends", &mut rand::rng());
        assert_eq!(open_blob(&key, TITLE_LABEL, &blob), Some(b"friends".to_vec()));
        assert_eq!(open_blob(&[8u8; 32], TITLE_LABEL, &blob), None);
        assert_eq!(open_blob(&key, DESCRIPTION_LABEL, &blob), None);
        let mut bent = blob.clone();
        bent[14] ^= 1;
        assert_eq!(open_blob(&key, TITLE_LABEL, &bent), None);
        assert!(seal_blob(&key, TITLE_LABEL, b"", &mut rand::rng()).is_empty());
        assert_ne!(blob, seal_blob(&key, TITLE_LABEL, b"friends", &mut rand::rng()), "a fresh nonce each time");
    }
}
