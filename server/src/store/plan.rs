//! The database-independent half of committing a batch of sends: given the
//! current rows of every device the batch names, check each send and assign
//! seqs in memory. A backend reads the rows in one query, calls [`plan`], and
//! writes the result in a couple of statements, instead of several statements
//! per message.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use uuid::Uuid;

use sha2::{Digest, Sha256};

use super::group_plan::{self, GroupStates};
use super::{
    Accepted, Committed, Device, DeviceKey, GroupPosition, IDEMPOTENCY_RETENTION_MS, Mismatch, OutgoingMessage,
    RecipientBatch, SendOutcome, SendRejection, StoredEnvelope, Write, compare_device_sets, own_devices_missing,
};

/// Puts looked-up devices in the order of the keys asked for (`None` where none was found).
pub(crate) fn align_devices(keys: &[DeviceKey], found: Vec<Device>) -> Vec<Option<Device>> {
    let by_key: HashMap<DeviceKey, Device> = found.into_iter().map(|d| (d.key, d)).collect();
    keys.iter().map(|k| by_key.get(k).cloned()).collect()
}

/// The stored form of an idempotency key.
pub(crate) type KeyHash = [u8; 32];

/// The stored form of a write's idempotency key: SHA-256 over a domain, the sending device
/// and the client's key. It names no sender, and a resend from another device never matches.
pub(crate) fn key_hash(write: &Write) -> Option<KeyHash> {
    let key = write.idempotency_key().filter(|k| !k.is_empty())?;
    let sender = write.sender();
    let mut h = Sha256::new();
    h.update(b"hush-send-key-v1\0");
    h.update(sender.account.as_bytes());
    h.update(sender.device_id.to_be_bytes());
    h.update(key);
    Some(h.finalize().into())
}

/// The idempotency keys of a batch, for the backend to look up.
pub(crate) fn batch_key_hashes(writes: &[Write]) -> Vec<KeyHash> {
    let mut hashes: Vec<KeyHash> = writes.iter().filter_map(key_hash).collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// The first answer of a stored idempotency key: (server timestamp, group seq or 0).
pub(crate) type SeenKey = (u64, u64);

/// An idempotency key to record with a stored write.
#[derive(Debug, Clone)]
pub(crate) struct KeyRow {
    pub hash: KeyHash,
    pub server_ts: u64,
    pub expires_at: u64,
    /// The group seq of a group message, else 0.
    pub group_seq: u64,
}

/// A target device as the send path sees it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRow {
    pub pk: i64,
    pub device_id: u32,
    pub registration_id: u32,
    pub mailbox_count: u64,
    pub last_seq: u64,
}

/// The devices of every account a batch names, read once up front.
#[derive(Debug, Default)]
pub(crate) struct DeviceSets {
    rows: Vec<DeviceRow>,
    /// The account of each row.
    row_accounts: Vec<Uuid>,
    /// Per account, indexes into `rows` in device-id order.
    by_account: HashMap<Uuid, Vec<usize>>,
    /// Accounts that exist (with or without devices).
    accounts: HashSet<Uuid>,
}

/// How strictly a send is checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckMode {
    /// Refuse when a target mailbox holds this many envelopes.
    pub max_mailbox: Option<u64>,
    /// The sender's other devices must be listed (stored sends keep every own device in step).
    pub require_own_devices: bool,
}

impl CheckMode {
    /// Online-only sends (typing, presence) need not reach the sender's other devices.
    pub const ONLINE_ONLY: CheckMode = CheckMode { max_mailbox: None, require_own_devices: false };

    /// A stored send.
    pub fn stored(max_mailbox: u64) -> Self {
        CheckMode { max_mailbox: Some(max_mailbox), require_own_devices: true }
    }
}

/// Every account a batch names: recipients, senders (whose other devices must be listed)
/// and the members of the groups it writes to (loaded first, as `groups`).
pub(crate) fn batch_accounts(writes: &[Write], groups: &GroupStates) -> Vec<Uuid> {
    let mut accounts: Vec<Uuid> = Vec::new();
    for write in writes {
        accounts.push(write.sender().account);
        match write {
            Write::Direct(i) => accounts.extend(i.recipients.iter().map(|r| r.account)),
            Write::Distribute(i) => accounts.extend(i.recipients.iter().map(|r| r.account)),
            Write::Group(_) => {}
        }
    }
    for g in groups.values() {
        accounts.extend(g.members.iter().copied());
    }
    accounts.sort_unstable();
    accounts.dedup();
    accounts
}

/// The mailbox pks of the devices that send group messages in a batch (whose distributions
/// the backend reads).
pub(crate) fn group_senders(writes: &[Write], sets: &DeviceSets) -> Vec<i64> {
    let mut pks: Vec<i64> = writes
        .iter()
        .filter(|w| matches!(w, Write::Group(_)))
        .filter_map(|w| sets.index_of(w.sender()).map(|i| sets.row(i).pk))
        .collect();
    pks.sort_unstable();
    pks.dedup();
    pks
}

/// The groups a batch writes to, for the backend to load (and lock) first.
pub(crate) fn batch_groups(writes: &[Write]) -> Vec<Uuid> {
    let mut groups: Vec<Uuid> = writes.iter().filter_map(Write::group).collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

impl DeviceSets {
    /// Records that `account` exists.
    pub fn add_account(&mut self, account: Uuid) {
        self.accounts.insert(account);
    }

    /// Records a device of `account`.
    pub fn add_device(&mut self, account: Uuid, row: DeviceRow) {
        self.accounts.insert(account);
        self.by_account.entry(account).or_default().push(self.rows.len());
        self.rows.push(row);
        self.row_accounts.push(account);
    }

    /// The row indexes of `account`'s devices, in device-id order.
    pub fn account_rows(&self, account: Uuid) -> &[usize] {
        self.by_account.get(&account).map(Vec::as_slice).unwrap_or_default()
    }

    /// One device row.
    pub fn row(&self, i: usize) -> &DeviceRow {
        &self.rows[i]
    }

    /// The row index of a device.
    pub fn index_of(&self, key: DeviceKey) -> Option<usize> {
        self.account_rows(key.account).iter().copied().find(|&i| self.rows[i].device_id == key.device_id)
    }

    /// The device of row `i`.
    pub fn key_of(&self, i: usize) -> DeviceKey {
        DeviceKey { account: self.row_accounts[i], device_id: self.rows[i].device_id }
    }

    fn existing(&self, account: Uuid) -> (&[usize], Vec<(u32, u32)>) {
        let indexes = self.by_account.get(&account).map(Vec::as_slice).unwrap_or_default();
        let existing = indexes.iter().map(|&i| (self.rows[i].device_id, self.rows[i].registration_id)).collect();
        (indexes, existing)
    }

    /// Checks one send: unknown accounts first, then device sets (with the sender's own
    /// other devices), then full mailboxes. Gives (device, row index, message) per envelope.
    pub fn check<'a>(
        &self,
        sender: DeviceKey,
        recipients: &'a [RecipientBatch],
        mode: CheckMode,
    ) -> Result<Vec<(DeviceKey, usize, &'a OutgoingMessage)>, SendRejection> {
        let mut mismatches: Vec<Mismatch> = Vec::new();
        let mut unknown = Vec::new();
        let mut full = Vec::new();
        let mut targets = Vec::new();
        for recipient in recipients {
            if !self.accounts.contains(&recipient.account) {
                unknown.push(recipient.account);
                continue;
            }
            let (indexes, existing) = self.existing(recipient.account);
            let exclude = (recipient.account == sender.account).then_some(sender.device_id);
            if let Some(m) = compare_device_sets(recipient.account, &existing, &recipient.messages, exclude) {
                mismatches.push(m);
                continue;
            }
            for message in &recipient.messages {
                let Some(&i) = indexes.iter().find(|&&i| self.rows[i].device_id == message.device_id) else {
                    continue;
                };
                let key = DeviceKey { account: recipient.account, device_id: message.device_id };
                if mode.max_mailbox.is_some_and(|max| self.rows[i].mailbox_count >= max) {
                    full.push(key);
                }
                targets.push((key, i, message));
            }
        }
        if mode.require_own_devices && !recipients.iter().any(|r| r.account == sender.account) {
            let (_, own) = self.existing(sender.account);
            mismatches.extend(own_devices_missing(sender, &own));
        }
        if !unknown.is_empty() {
            Err(SendRejection::UnknownAccounts(unknown))
        } else if !mismatches.is_empty() {
            Err(SendRejection::DeviceMismatch(mismatches))
        } else if !full.is_empty() {
            Err(SendRejection::MailboxFull(full))
        } else {
            Ok(targets)
        }
    }
}

/// One envelope to insert (for a group envelope: a reference with empty content).
#[derive(Debug, Clone)]
pub(crate) struct Append {
    pub pk: i64,
    pub seq: u64,
    pub server_ts: u64,
    pub expires_at: u64,
    pub kind: i32,
    pub content: Bytes,
    pub group: Option<GroupPosition>,
}

/// A group message (or roster change) to store once.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupMessageRow {
    pub group: Uuid,
    pub seq: u64,
    pub server_ts: u64,
    pub expires_at: u64,
    pub kind: i32,
    pub content: Bytes,
    /// Mailbox references to it.
    pub refs: u64,
}

/// "Device `recipient_pk` holds a distribution from `sender_pk` for `epoch`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DistributionRow {
    pub group: Uuid,
    pub epoch: u64,
    pub sender_pk: i64,
    pub recipient_pk: i64,
}

/// What a batch writes, and what each write's answer is.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Envelopes to insert.
    pub appends: Vec<Append>,
    /// Per mailbox pk: (envelopes added, its `last_seq` once the batch is in).
    pub bumped: BTreeMap<i64, (u64, u64)>,
    /// Idempotency keys of the writes stored now.
    pub keys: Vec<KeyRow>,
    /// Group messages to store (once each).
    pub group_messages: Vec<GroupMessageRow>,
    /// Per group written to: its `seq` once the batch is in.
    pub group_seqs: BTreeMap<Uuid, u64>,
    /// Distribution records to insert or refresh.
    pub distributions: Vec<DistributionRow>,
    /// References added to group messages stored earlier, per (group, seq).
    pub group_refs: BTreeMap<(Uuid, u64), u64>,
    /// One outcome per write, in order.
    pub outcomes: Vec<SendOutcome>,
}

impl Plan {
    /// Appends one envelope to the mailbox of row `i` and returns what was committed; the
    /// stored content is empty for a group reference (the payload is stored once).
    pub fn append(&mut self, sets: &mut DeviceSets, i: usize, envelope: EnvelopeDraft) -> Committed {
        let row = &mut sets.rows[i];
        row.last_seq += 1;
        row.mailbox_count += 1;
        let entry = self.bumped.entry(row.pk).or_insert((0, row.last_seq));
        entry.0 += 1;
        entry.1 = row.last_seq;
        let stored = if envelope.group.is_some() { Bytes::new() } else { envelope.content.clone() };
        self.appends.push(Append {
            pk: row.pk,
            seq: row.last_seq,
            server_ts: envelope.server_ts,
            expires_at: envelope.expires_at,
            kind: envelope.kind,
            content: stored,
            group: envelope.group,
        });
        let device = sets.key_of(i);
        Committed {
            device,
            envelope: StoredEnvelope {
                seq: sets.rows[i].last_seq,
                server_ts: envelope.server_ts,
                kind: envelope.kind,
                content: envelope.content,
                group: envelope.group,
            },
        }
    }
}

/// An envelope to append to some mailbox.
#[derive(Debug, Clone)]
pub(crate) struct EnvelopeDraft {
    pub server_ts: u64,
    pub expires_at: u64,
    pub kind: i32,
    pub content: Bytes,
    pub group: Option<GroupPosition>,
}

/// Checks every write against `sets` (and `groups`) and assigns seqs, updating both as it
/// goes so later writes in the batch see earlier ones (mailbox counts, seqs, group seqs,
/// distributions). `seen` holds the idempotency keys already stored (with their first
/// answer); a write with one of them, or with the key of a write stored earlier in this
/// batch, is a duplicate and stores nothing.
pub(crate) fn plan(
    sets: &mut DeviceSets,
    groups: &mut GroupStates,
    writes: &[Write],
    max_mailbox: u64,
    seen: &HashMap<KeyHash, SeenKey>,
) -> Plan {
    let mut plan = Plan::default();
    let mut stored_now: HashMap<KeyHash, SeenKey> = HashMap::new();
    for write in writes {
        let hash = key_hash(write);
        if let Some(&(server_ts, group_seq)) = hash.as_ref().and_then(|h| seen.get(h).or_else(|| stored_now.get(h))) {
            let group_seq = (group_seq > 0).then_some(group_seq);
            plan.outcomes.push(Ok(Accepted::Duplicate { server_ts, group_seq }));
            continue;
        }
        let outcome = match write {
            Write::Direct(item) => plan_direct(&mut plan, sets, item, max_mailbox),
            Write::Group(item) => group_plan::plan_group_send(&mut plan, sets, groups, item),
            Write::Distribute(item) => group_plan::plan_distribute(&mut plan, sets, groups, item),
        };
        if let (Some(hash), Ok(Accepted::Stored { group_seq, .. })) = (hash, &outcome) {
            let server_ts = write.server_ts();
            let group_seq = group_seq.unwrap_or(0);
            stored_now.insert(hash, (server_ts, group_seq));
            plan.keys.push(KeyRow {
                hash,
                server_ts,
                expires_at: server_ts.saturating_add(IDEMPOTENCY_RETENTION_MS),
                group_seq,
            });
        }
        plan.outcomes.push(outcome);
    }
    plan
}

fn plan_direct(plan: &mut Plan, sets: &mut DeviceSets, item: &super::SendItem, max_mailbox: u64) -> SendOutcome {
    let targets = sets.check(item.sender, &item.recipients, CheckMode::stored(max_mailbox))?;
    let targets: Vec<(usize, i32, Bytes)> =
        targets.into_iter().map(|(_, i, m)| (i, m.kind, m.content.clone())).collect();
    let mut committed = Vec::with_capacity(targets.len());
    for (i, kind, content) in targets {
        let draft =
            EnvelopeDraft { server_ts: item.server_ts, expires_at: item.expires_at, kind, content, group: None };
        committed.push(plan.append(sets, i, draft));
    }
    Ok(Accepted::Stored { committed, group_seq: None, streamed: None })
}
