//! The database-independent half of committing a batch of sends: given the
//! current rows of every device the batch names, check each send and assign
//! seqs in memory. A backend reads the rows in one query, calls [`plan`], and
//! writes the result in a couple of statements, instead of several statements
//! per message.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use uuid::Uuid;

use sha2::{Digest, Sha256};

use super::{
    Accepted, Committed, Device, DeviceKey, IDEMPOTENCY_RETENTION_MS, Mismatch, OutgoingMessage, RecipientBatch,
    SendItem, SendOutcome, SendRejection, StoredEnvelope, compare_device_sets, own_devices_missing,
};

/// Puts looked-up devices in the order of the keys asked for (`None` where none was found).
pub(crate) fn align_devices(keys: &[DeviceKey], found: Vec<Device>) -> Vec<Option<Device>> {
    let by_key: HashMap<DeviceKey, Device> = found.into_iter().map(|d| (d.key, d)).collect();
    keys.iter().map(|k| by_key.get(k).cloned()).collect()
}

/// The stored form of an idempotency key.
pub(crate) type KeyHash = [u8; 32];

/// The stored form of a send's idempotency key: SHA-256 over a domain, the sending device
/// and the client's key. It names no sender, and a resend from another device never matches.
pub(crate) fn key_hash(item: &SendItem) -> Option<KeyHash> {
    let key = item.idempotency_key.as_ref().filter(|k| !k.is_empty())?;
    let mut h = Sha256::new();
    h.update(b"hush-send-key-v1\0");
    h.update(item.sender.account.as_bytes());
    h.update(item.sender.device_id.to_be_bytes());
    h.update(key);
    Some(h.finalize().into())
}

/// The idempotency keys of a batch, for the backend to look up.
pub(crate) fn batch_key_hashes(items: &[SendItem]) -> Vec<KeyHash> {
    let mut hashes: Vec<KeyHash> = items.iter().filter_map(key_hash).collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// An idempotency key to record with a stored send.
#[derive(Debug, Clone)]
pub(crate) struct KeyRow {
    pub hash: KeyHash,
    pub server_ts: u64,
    pub expires_at: u64,
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

/// Every account a batch names: recipients and senders (whose other devices must be listed).
pub(crate) fn batch_accounts(items: &[SendItem]) -> Vec<Uuid> {
    let mut accounts: Vec<Uuid> = items
        .iter()
        .flat_map(|i| i.recipients.iter().map(|r| r.account).chain(std::iter::once(i.sender.account)))
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    accounts
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

/// One envelope to insert.
#[derive(Debug, Clone)]
pub(crate) struct Append {
    pub pk: i64,
    pub seq: u64,
    pub server_ts: u64,
    pub expires_at: u64,
    pub kind: i32,
    pub content: Bytes,
}

/// What a batch writes, and what each send's answer is.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Envelopes to insert.
    pub appends: Vec<Append>,
    /// Per mailbox pk: (envelopes added, its `last_seq` once the batch is in).
    pub bumped: BTreeMap<i64, (u64, u64)>,
    /// Idempotency keys of the sends stored now.
    pub keys: Vec<KeyRow>,
    /// One outcome per send, in order.
    pub outcomes: Vec<SendOutcome>,
}

/// Checks every send against `sets` and assigns seqs, updating `sets` as it goes so
/// later sends in the batch see earlier ones (mailbox counts, seqs). `seen` holds the
/// idempotency keys already stored (with their first answer); a send with one of them, or
/// with the key of a send stored earlier in this batch, is a duplicate and stores nothing.
pub(crate) fn plan(sets: &mut DeviceSets, items: &[SendItem], max_mailbox: u64, seen: &HashMap<KeyHash, u64>) -> Plan {
    let mut plan = Plan::default();
    let mut stored_now: HashMap<KeyHash, u64> = HashMap::new();
    for item in items {
        let hash = key_hash(item);
        if let Some(&server_ts) = hash.as_ref().and_then(|h| seen.get(h).or_else(|| stored_now.get(h))) {
            plan.outcomes.push(Ok(Accepted::Duplicate { server_ts }));
            continue;
        }
        let targets = match sets.check(item.sender, &item.recipients, CheckMode::stored(max_mailbox)) {
            Ok(targets) => targets,
            Err(rejection) => {
                plan.outcomes.push(Err(rejection));
                continue;
            }
        };
        let mut committed = Vec::with_capacity(targets.len());
        for (device, i, message) in targets {
            let row = &mut sets.rows[i];
            row.last_seq += 1;
            row.mailbox_count += 1;
            let entry = plan.bumped.entry(row.pk).or_insert((0, row.last_seq));
            entry.0 += 1;
            entry.1 = row.last_seq;
            plan.appends.push(Append {
                pk: row.pk,
                seq: row.last_seq,
                server_ts: item.server_ts,
                expires_at: item.expires_at,
                kind: message.kind,
                content: message.content.clone(),
            });
            committed.push(Committed {
                device,
                envelope: StoredEnvelope {
                    seq: row.last_seq,
                    server_ts: item.server_ts,
                    kind: message.kind,
                    content: message.content.clone(),
                },
            });
        }
        if let Some(hash) = hash {
            stored_now.insert(hash, item.server_ts);
            plan.keys.push(KeyRow {
                hash,
                server_ts: item.server_ts,
                expires_at: item.server_ts.saturating_add(IDEMPOTENCY_RETENTION_MS),
            });
        }
        plan.outcomes.push(Ok(Accepted::Stored(committed)));
    }
    plan
}
