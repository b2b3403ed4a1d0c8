//! [`MemoryStore`]: the in-memory [`ClientStore`], for tests and throwaway clients.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    Address, Batch, ClientStore, ContactRow, GroupRow, HeldRow, KyberRow, LocalAccount, MessageRow, OutboxRow,
    PROCESSED_ENVELOPE_WINDOW, PROCESSED_GROUP_SEQ_WINDOW, SENT_LOG_CAPACITY, SearchQuery, SearchRow, SentLogRow,
    display_order, next_status,
};
use crate::error::StoreError;
use crate::types::{ConversationId, MessageId};

#[derive(Default)]
struct State {
    account: Option<LocalAccount>,
    sessions: BTreeMap<Address, Vec<u8>>,
    identities: HashMap<String, Vec<u8>>,
    pre_keys: HashMap<u32, Vec<u8>>,
    signed_pre_keys: HashMap<u32, Vec<u8>>,
    kyber_pre_keys: HashMap<u32, KyberRow>,
    kyber_used: BTreeSet<(u32, u32, Vec<u8>)>,
    sender_keys: HashMap<(Address, Uuid), Vec<u8>>,
    contacts: BTreeMap<Uuid, ContactRow>,
    messages: HashMap<MessageId, MessageRow>,
    processed: BTreeSet<u64>,
    processed_group_seqs: BTreeSet<(Uuid, u64)>,
    clocks: HashMap<ConversationId, u64>,
    outbox: BTreeMap<u64, OutboxRow>,
    next_outbox: u64,
    next_message: u64,
    values: HashMap<String, Vec<u8>>,
    /// Oldest first.
    sent_log: VecDeque<SentLogRow>,
    groups: BTreeMap<Uuid, GroupRow>,
    distributions: HashMap<(Uuid, Uuid), (Uuid, u32)>,
    held: BTreeMap<(Uuid, u64), HeldRow>,
}

/// A [`ClientStore`] that keeps everything in memory (lost when dropped).
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in this file panics while holding the lock; recover rather than propagate.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn apply<K: Ord + std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, changes: BTreeMap<K, Option<V>>) {
    for (k, v) in changes {
        match v {
            Some(v) => {
                map.insert(k, v);
            }
            None => {
                map.remove(&k);
            }
        }
    }
}

#[async_trait]
impl ClientStore for MemoryStore {
    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let mut s = self.lock();
        if let Some(a) = batch.account {
            s.account = Some(a);
        }
        for (k, v) in batch.sessions {
            match v {
                Some(v) => {
                    s.sessions.insert(k, v);
                }
                None => {
                    s.sessions.remove(&k);
                }
            }
        }
        s.identities.extend(batch.identities);
        apply(&mut s.pre_keys, batch.pre_keys);
        apply(&mut s.signed_pre_keys, batch.signed_pre_keys);
        apply(&mut s.kyber_pre_keys, batch.kyber_pre_keys);
        s.kyber_used.extend(batch.kyber_used);
        for (k, v) in batch.sender_keys {
            match v {
                Some(v) => {
                    s.sender_keys.insert(k, v);
                }
                None => {
                    s.sender_keys.remove(&k);
                }
            }
        }
        for c in batch.contacts {
            s.contacts.insert(c.account_id, c);
        }
        for mut m in batch.messages {
            if !s.messages.contains_key(&m.id) {
                s.next_message += 1;
                m.local_seq = s.next_message;
                s.messages.insert(m.id, m);
            }
        }
        for id in batch.messages_remove {
            s.messages.remove(&id);
        }
        for (id, status) in batch.message_status {
            if let Some(m) = s.messages.get_mut(&id) {
                m.status = next_status(&m.status, &status);
            }
        }
        for (id, seq) in batch.message_group_seq {
            if let Some(m) = s.messages.get_mut(&id) {
                m.group_seq = seq;
            }
        }
        s.processed.extend(batch.processed_envelopes);
        if let Some(floor) = s.processed.last().and_then(|n| n.checked_sub(PROCESSED_ENVELOPE_WINDOW)) {
            s.processed = s.processed.split_off(&(floor + 1));
        }
        let touched: BTreeSet<Uuid> = batch.processed_group_seqs.iter().map(|(g, _)| *g).collect();
        s.processed_group_seqs.extend(batch.processed_group_seqs);
        for group in touched {
            let newest = s.processed_group_seqs.range((group, 0)..=(group, u64::MAX)).next_back().map(|(_, q)| *q);
            let Some(floor) = newest.and_then(|n| n.checked_sub(PROCESSED_GROUP_SEQ_WINDOW)) else { continue };
            let forgotten: Vec<(Uuid, u64)> =
                s.processed_group_seqs.range((group, 0)..=(group, floor)).copied().collect();
            for key in forgotten {
                s.processed_group_seqs.remove(&key);
            }
        }
        for (peer, clock) in batch.clocks {
            let c = s.clocks.entry(peer).or_insert(0);
            *c = (*c).max(clock);
        }
        for o in batch.outbox_add {
            s.next_outbox += 1;
            let seq = s.next_outbox;
            s.outbox.insert(
                seq,
                OutboxRow {
                    seq,
                    message_id: o.message_id,
                    conversation: o.conversation,
                    kind: o.kind,
                    content: o.content,
                    attempts: 0,
                    not_before: 0,
                    failed: None,
                    last_error: None,
                },
            );
        }
        for o in batch.outbox_update {
            if let Some(row) = s.outbox.get_mut(&o.seq) {
                *row = o;
            }
        }
        for seq in batch.outbox_remove {
            s.outbox.remove(&seq);
        }
        apply(&mut s.values, batch.values);
        for row in batch.sent_log {
            s.sent_log.retain(|r| (&r.address, r.timestamp) != (&row.address, row.timestamp));
            s.sent_log.push_back(row);
        }
        while s.sent_log.len() > SENT_LOG_CAPACITY {
            s.sent_log.pop_front();
        }
        for (address, timestamp) in batch.sent_log_remove {
            s.sent_log.retain(|r| (&r.address, r.timestamp) != (&address, timestamp));
        }
        for (id, group) in batch.groups {
            match group {
                Some(g) => {
                    s.groups.insert(id, g);
                }
                None => {
                    s.groups.remove(&id);
                }
            }
        }
        for b in batch.distributions {
            s.distributions.entry((b.group, b.distribution)).or_insert((b.account, b.device));
        }
        for h in batch.held_add {
            s.held.entry((h.group, h.group_seq)).or_insert(h);
        }
        for key in batch.held_remove {
            s.held.remove(&key);
        }
        Ok(())
    }

    async fn account(&self) -> Result<Option<LocalAccount>, StoreError> {
        Ok(self.lock().account.clone())
    }

    async fn session(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().sessions.get(address).cloned())
    }

    async fn session_devices(&self, name: &str) -> Result<Vec<u32>, StoreError> {
        Ok(self.lock().sessions.keys().filter(|(n, _)| n == name).map(|(_, d)| *d).collect())
    }

    async fn identity(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().identities.get(name).cloned())
    }

    async fn pre_key(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().pre_keys.get(&id).cloned())
    }

    async fn signed_pre_key(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().signed_pre_keys.get(&id).cloned())
    }

    async fn kyber_pre_key(&self, id: u32) -> Result<Option<KyberRow>, StoreError> {
        Ok(self.lock().kyber_pre_keys.get(&id).cloned())
    }

    async fn kyber_used(&self, kyber_id: u32, signed_id: u32, base_key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.lock().kyber_used.contains(&(kyber_id, signed_id, base_key.to_vec())))
    }

    async fn sender_key(&self, sender: &Address, distribution: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().sender_keys.get(&(sender.clone(), distribution)).cloned())
    }

    async fn contact(&self, account: Uuid) -> Result<Option<ContactRow>, StoreError> {
        Ok(self.lock().contacts.get(&account).cloned())
    }

    async fn contact_by_username(&self, username: &str) -> Result<Option<ContactRow>, StoreError> {
        Ok(self.lock().contacts.values().find(|c| c.username == username).cloned())
    }

    async fn contacts(&self) -> Result<Vec<ContactRow>, StoreError> {
        let mut all: Vec<ContactRow> = self.lock().contacts.values().cloned().collect();
        all.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(all)
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageRow>, StoreError> {
        Ok(self.lock().messages.get(&id).cloned())
    }

    async fn messages(&self, conversation: ConversationId, limit: usize) -> Result<Vec<MessageRow>, StoreError> {
        let mut all: Vec<MessageRow> =
            self.lock().messages.values().filter(|m| m.conversation == conversation).cloned().collect();
        all.sort_by(display_order);
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }

    async fn messages_after(&self, after: u64, limit: usize) -> Result<Vec<MessageRow>, StoreError> {
        let mut all: Vec<MessageRow> = self.lock().messages.values().filter(|m| m.local_seq > after).cloned().collect();
        all.sort_by_key(|m| m.local_seq);
        all.truncate(limit);
        Ok(all)
    }

    async fn envelope_processed(&self, seq: u64) -> Result<bool, StoreError> {
        Ok(self.lock().processed.contains(&seq))
    }

    async fn group_seq_processed(&self, group: Uuid, group_seq: u64) -> Result<bool, StoreError> {
        Ok(self.lock().processed_group_seqs.contains(&(group, group_seq)))
    }

    async fn clock(&self, conversation: ConversationId) -> Result<u64, StoreError> {
        Ok(self.lock().clocks.get(&conversation).copied().unwrap_or(0))
    }

    async fn outbox_head(&self) -> Result<Option<OutboxRow>, StoreError> {
        Ok(self.lock().outbox.values().find(|o| o.failed.is_none()).cloned())
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(self.lock().outbox.values().filter(|o| o.failed.is_none()).take(limit).cloned().collect())
    }

    async fn outbox_all(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(self.lock().outbox.values().take(limit).cloned().collect())
    }

    async fn outbox_by_message(&self, id: MessageId) -> Result<Option<OutboxRow>, StoreError> {
        Ok(self.lock().outbox.values().find(|o| o.message_id == id).cloned())
    }

    async fn outbox_counts(&self) -> Result<(u64, u64), StoreError> {
        let s = self.lock();
        let failed = s.outbox.values().filter(|o| o.failed.is_some()).count() as u64;
        Ok((s.outbox.len() as u64 - failed, failed))
    }

    async fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().values.get(key).cloned())
    }

    async fn sent_log(&self, address: &Address, timestamp: u64) -> Result<Option<SentLogRow>, StoreError> {
        Ok(self.lock().sent_log.iter().find(|r| &r.address == address && r.timestamp == timestamp).cloned())
    }

    async fn group(&self, id: Uuid) -> Result<Option<GroupRow>, StoreError> {
        Ok(self.lock().groups.get(&id).cloned())
    }

    async fn groups(&self) -> Result<Vec<GroupRow>, StoreError> {
        Ok(self.lock().groups.values().cloned().collect())
    }

    async fn distribution(&self, group: Uuid, distribution: Uuid) -> Result<Option<(Uuid, u32)>, StoreError> {
        Ok(self.lock().distributions.get(&(group, distribution)).copied())
    }

    async fn held(&self, group: Uuid) -> Result<Vec<HeldRow>, StoreError> {
        Ok(self.lock().held.range((group, 0)..=(group, u64::MAX)).map(|(_, h)| h.clone()).collect())
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchRow>, StoreError> {
        Ok(super::search::scan(self.lock().messages.values(), query))
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance_tests!(async { crate::store::MemoryStore::new() });
}
