//! An in-memory relay that behaves like `hushd` for machine tests: accounts, prekeys handed
//! out once, device-set checks, mailboxes with seqs, acks, online-only sends, certificates,
//! and group streams (groups read from their stream instead of mailbox references).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use hush_keys::certs::ServerKeys;
use hush_wire::api::{
    AccountInfo, B64, DeviceBundle, DeviceInfo, DeviceList, NewDevice, PreKeyBundles, PreKeyCount,
    SenderCertificateResponse,
};
use hush_wire::frames::{
    DeviceMismatch, Envelope, SendError, SendErrorCode, SendOk, SendRequest, SendResponse, send_response,
};
use uuid::Uuid;

use crate::account::{Registration, RegistrationParams};
use crate::machine::{Machine, OutgoingRequest, RestAnswer, RestCall, RestFailure};
use crate::store::{ClientStore, LocalAccount, MemoryStore};
use crate::types::Event;

pub const NOW: u64 = 1_800_000_000_000;

use hush_wire::limits::MAX_SEND_BYTES;

mod groups;
pub use groups::RelayGroup;

struct Device {
    keys: NewDevice,
    mailbox: BTreeMap<u64, Envelope>,
    /// Group-stream envelopes this device has not acked, by (group, group seq).
    stream: BTreeSet<(Uuid, u64)>,
}

struct Account {
    username: String,
    identity: Vec<u8>,
    devices: BTreeMap<u32, Device>,
}

/// One device of one account, driven by the test.
pub struct Party {
    pub machine: Machine,
    pub store: Arc<MemoryStore>,
    pub account: Uuid,
    pub device: u32,
    pub online: bool,
    /// Envelopes pushed on the current connection (not acked yet).
    pushed: Vec<u64>,
    /// Group-stream envelopes pushed on the current connection, by (group, group seq).
    pushed_stream: Vec<(Uuid, u64)>,
    pub events: Vec<Event>,
    queue_empty_sent: bool,
    /// When false, acks are dropped (as if lost on the way).
    pub acks_reach_server: bool,
}

pub struct Relay {
    keys: ServerKeys,
    accounts: HashMap<Uuid, Account>,
    next_seq: u64,
    pub now: u64,
    /// Prekey count the relay reports (None: the real count).
    pub report_count: Option<u32>,
    pub uploads: usize,
    /// Refuse this many of the next sends with `RATE_LIMITED` (retry after 500 ms).
    pub rate_limit_next: u32,
    /// Refuse this many of the next sends with `MAILBOX_FULL`.
    pub mailbox_full_next: u32,
    /// Sends refused for their size.
    pub refused_too_large: u32,
    /// Groups, as hushd keeps them (see `relay/groups.rs`).
    pub groups: BTreeMap<Uuid, RelayGroup>,
    /// Answers to group sends by (device, idempotency key).
    group_sends: HashMap<(Uuid, u32, Vec<u8>), SendResponse>,
    /// Distributions to this device are kept back (appended by `release_distributions`).
    pub hold_distributions_to: Option<(Uuid, u32)>,
    held_distributions: Vec<Envelope>,
    /// Every group message ciphertext the relay accepted, in order.
    pub group_ciphertexts: Vec<(Uuid, u64, Vec<u8>)>,
    /// Carry out this many of the next REST calls but lose their answers.
    pub lose_rest_answers: u32,
    /// Refuse prekey uploads (500) while set.
    pub refuse_uploads: bool,
    /// Carry out this many of the next group sends but lose their answers.
    pub lose_group_send_answers: u32,
    /// Every one-to-one send the relay got: (sending account, online_only, urgent).
    pub send_flags: Vec<(Uuid, bool, bool)>,
    /// Every group-stream ack that reached the relay: (account, device, group, group seq).
    pub stream_acks: Vec<(Uuid, u32, Uuid, u64)>,
}

impl Relay {
    pub fn new() -> Self {
        let keys = ServerKeys::generate(&mut rand::rng()).unwrap_or_else(|e| panic!("{e}"));
        Relay {
            keys,
            accounts: HashMap::new(),
            next_seq: 0,
            now: NOW,
            report_count: None,
            uploads: 0,
            rate_limit_next: 0,
            mailbox_full_next: 0,
            refused_too_large: 0,
            groups: BTreeMap::new(),
            group_sends: HashMap::new(),
            hold_distributions_to: None,
            held_distributions: Vec::new(),
            group_ciphertexts: Vec::new(),
            lose_rest_answers: 0,
            refuse_uploads: false,
            lose_group_send_answers: 0,
            send_flags: Vec::new(),
            stream_acks: Vec::new(),
        }
    }

    /// Registers a new account with its primary device.
    pub async fn register(&mut self, username: &str) -> Party {
        let account = Uuid::new_v4();
        self.register_as(username, account).await
    }

    /// Registers (or re-registers, replacing every device and the identity key) `account`.
    pub async fn register_as(&mut self, username: &str, account: Uuid) -> Party {
        let params = RegistrationParams {
            username: username.into(),
            server_url: "http://relay".into(),
            trust_root: self.keys.trust_root_public(),
            now_ms: self.now,
        };
        let reg = Registration::generate(params, &mut rand::rng()).unwrap_or_else(|e| panic!("{e}"));
        let device = Device { keys: reg.request.device.clone(), mailbox: BTreeMap::new(), stream: BTreeSet::new() };
        let identity = reg.request.identity_key.0.clone();
        let (_, batch) = reg.finish(&hush_wire::api::RegisterResponse { account_id: account, device_id: 1 });
        self.accounts
            .insert(account, Account { username: username.into(), identity, devices: BTreeMap::from([(1, device)]) });
        let store = Arc::new(MemoryStore::new());
        store.commit(batch).await.unwrap_or_else(|e| panic!("{e}"));
        Self::party(store, account, 1).await
    }

    /// Adds a device to an existing account (same identity key pair), as linking would.
    pub async fn link_device(&mut self, primary: &Party, device_id: u32) -> Party {
        let mut local: LocalAccount = primary.machine.account().clone();
        local.device_id = device_id;
        local.registration_id = 1000 + device_id;
        local.next_prekey_id = 1;
        local.next_kyber_id = 2;
        local.auth_key = vec![device_id as u8; 32];
        let identity = libsignal_protocol::IdentityKeyPair::try_from(&local.identity_key_pair[..])
            .unwrap_or_else(|e| panic!("{e}"));
        let mut batch = crate::store::Batch::default();
        let mut rng = rand::rng();
        let signed = crate::account::signed_prekey(&identity, 1, self.now, &mut batch, &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        let last_resort =
            crate::account::kyber_prekey(&identity, 1, true, &mut batch).unwrap_or_else(|e| panic!("{e}"));
        let keys = crate::account::one_time_keys(&mut local, 5, &mut batch, &mut rng).unwrap_or_else(|e| panic!("{e}"));
        let new_device = NewDevice {
            registration_id: local.registration_id,
            auth_key: B64(vec![0; 32]),
            name: None,
            signed_prekey: signed,
            kyber_last_resort: last_resort,
            one_time_prekeys: keys.ec,
            one_time_kyber_prekeys: keys.kyber,
        };
        let account = self.accounts.get_mut(&primary.account).unwrap_or_else(|| panic!("no account"));
        account
            .devices
            .insert(device_id, Device { keys: new_device, mailbox: BTreeMap::new(), stream: BTreeSet::new() });
        let store = Arc::new(MemoryStore::new());
        store.commit(batch).await.unwrap_or_else(|e| panic!("{e}"));
        Self::party(store, primary.account, device_id).await
    }

    /// A party from an existing store (e.g. after a simulated crash).
    pub async fn party(store: Arc<MemoryStore>, account: Uuid, device: u32) -> Party {
        let dyn_store: Arc<dyn ClientStore> = store.clone();
        let machine =
            Machine::load(dyn_store).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no account"));
        Party {
            machine,
            store,
            account,
            device,
            online: false,
            pushed: vec![],
            pushed_stream: vec![],
            events: vec![],
            queue_empty_sent: false,
            acks_reach_server: true,
        }
    }

    pub fn info(&self, account: Uuid) -> AccountInfo {
        let a = &self.accounts[&account];
        AccountInfo { account_id: account, username: a.username.clone(), identity_key: B64(a.identity.clone()) }
    }

    /// The ids of the signed EC prekey and the last-resort Kyber prekey the relay hands out.
    pub fn signed_prekey_ids(&self, account: Uuid, device: u32) -> (u32, u32) {
        let keys = &self.accounts[&account].devices[&device].keys;
        (keys.signed_prekey.id, keys.kyber_last_resort.id)
    }

    pub fn mailbox_len(&self, account: Uuid, device: u32) -> usize {
        self.accounts[&account].devices[&device].mailbox.len()
    }

    /// Group-stream envelopes this device has not acked.
    pub fn stream_len(&self, account: Uuid, device: u32) -> usize {
        self.accounts[&account].devices[&device].stream.len()
    }

    /// Lets time pass and ticks every party.
    pub async fn advance(&mut self, ms: u64, parties: &mut [&mut Party]) {
        self.now += ms;
        for p in parties.iter_mut() {
            p.machine.tick(self.now, &mut rand::rng()).await.unwrap_or_else(|e| panic!("{e}"));
        }
        self.settle(parties).await;
    }

    pub async fn connect(&mut self, party: &mut Party) {
        party.online = true;
        party.pushed.clear();
        party.pushed_stream.clear();
        party.queue_empty_sent = false;
        party.machine.connected(self.now, &mut rand::rng()).await.unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn disconnect(&mut self, party: &mut Party) {
        party.online = false;
        party.pushed.clear();
        party.pushed_stream.clear();
        party.machine.disconnected();
    }

    /// Runs every party until nothing moves any more.
    pub async fn settle(&mut self, parties: &mut [&mut Party]) {
        for _ in 0..10_000 {
            let mut progress = false;
            for i in 0..parties.len() {
                progress |= self.step(parties, i).await;
            }
            if !progress {
                return;
            }
        }
        panic!("the relay did not settle");
    }

    async fn step(&mut self, parties: &mut [&mut Party], i: usize) -> bool {
        let mut progress = false;
        let now = self.now;
        let mut rng = rand::rng();
        let requests = parties[i].machine.take_requests();
        for request in requests {
            progress = true;
            let (account, device) = (parties[i].account, parties[i].device);
            match request {
                OutgoingRequest::Send(req) => {
                    if !parties[i].online {
                        continue;
                    }
                    self.send_flags.push((account, req.online_only, req.urgent));
                    let online: Vec<(Uuid, u32)> =
                        parties.iter().filter(|p| p.online).map(|p| (p.account, p.device)).collect();
                    let resp = self.send(account, device, req, &online);
                    parties[i]
                        .machine
                        .handle_send_response(resp, now, &mut rng)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                OutgoingRequest::GroupSend(req) => {
                    if !parties[i].online {
                        continue;
                    }
                    let resp = self.group_send(account, device, req);
                    if self.lose_group_send_answers > 0 {
                        self.lose_group_send_answers -= 1;
                        continue;
                    }
                    parties[i]
                        .machine
                        .handle_send_response(resp, now, &mut rng)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                OutgoingRequest::Distribute(req) => {
                    if !parties[i].online {
                        continue;
                    }
                    let resp = self.distribute(account, device, req);
                    parties[i]
                        .machine
                        .handle_send_response(resp, now, &mut rng)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                OutgoingRequest::Ack(ack) => {
                    if parties[i].online && parties[i].acks_reach_server {
                        for seq in ack.seqs {
                            self.device_mut(account, device).mailbox.remove(&seq);
                        }
                        for g in ack.groups {
                            let group = Uuid::from_slice(&g.group_id).unwrap_or_else(|e| panic!("{e}"));
                            self.device_mut(account, device).stream.remove(&(group, g.seq));
                            self.stream_acks.push((account, device, group, g.seq));
                        }
                    }
                }
                OutgoingRequest::Rest { id, call } => {
                    let answer = self.rest(account, device, call);
                    if self.lose_rest_answers > 0 {
                        self.lose_rest_answers -= 1;
                        continue;
                    }
                    parties[i].machine.rest_response(id, answer, now, &mut rng).await.unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
        if parties[i].online {
            let (account, device) = (parties[i].account, parties[i].device);
            let pending: Vec<(u64, Envelope)> = self.accounts[&account].devices[&device]
                .mailbox
                .iter()
                .filter(|(k, _)| !parties[i].pushed.contains(k))
                .map(|(k, e)| (*k, e.clone()))
                .collect();
            // The mailbox first, then each group's stream by group seq (as hushd delivers).
            let streamed: Vec<Envelope> = self.accounts[&account].devices[&device]
                .stream
                .iter()
                .filter(|k| !parties[i].pushed_stream.contains(k))
                .map(|(g, seq)| self.groups[g].stream[seq].0.clone())
                .collect();
            let was_empty = pending.is_empty() && streamed.is_empty();
            for (key, env) in pending {
                progress = true;
                if env.seq == 0 {
                    self.device_mut(account, device).mailbox.remove(&key);
                } else {
                    parties[i].pushed.push(key);
                }
                parties[i].machine.receive_envelope(env, now, &mut rng).await.unwrap_or_else(|e| panic!("{e}"));
            }
            for env in streamed {
                progress = true;
                let group = Uuid::from_slice(&env.group_id).unwrap_or_else(|e| panic!("{e}"));
                parties[i].pushed_stream.push((group, env.group_seq));
                parties[i].machine.receive_envelope(env, now, &mut rng).await.unwrap_or_else(|e| panic!("{e}"));
            }
            // The first time the backlog is through on this connection, say so.
            if was_empty && !parties[i].queue_empty_sent {
                parties[i].queue_empty_sent = true;
                parties[i].machine.queue_empty(now, &mut rng).await.unwrap_or_else(|e| panic!("{e}"));
                progress = true;
            }
        }
        let events = parties[i].machine.take_events();
        progress |= !events.is_empty();
        parties[i].events.extend(events);
        progress
    }

    /// Stores a send as the server would, dropping the answer (as if the connection broke).
    pub fn accept_and_lose_answer(&mut self, from: &Party, req: SendRequest) {
        let resp = self.send(from.account, from.device, req, &[]);
        assert!(matches!(resp.result, Some(send_response::Result::Ok(_))), "{resp:?}");
    }

    fn device_mut(&mut self, account: Uuid, device: u32) -> &mut Device {
        self.accounts.get_mut(&account).and_then(|a| a.devices.get_mut(&device)).unwrap_or_else(|| panic!("no device"))
    }

    fn send(&mut self, sender: Uuid, sender_device: u32, req: SendRequest, online: &[(Uuid, u32)]) -> SendResponse {
        if self.rate_limit_next > 0 && !req.online_only {
            self.rate_limit_next -= 1;
            let error =
                SendError { code: SendErrorCode::RateLimited as i32, retry_after_ms: 500, ..Default::default() };
            return SendResponse { request_id: req.request_id, result: Some(send_response::Result::Error(error)) };
        }
        // The server's size limits, as hushd checks them.
        let largest = req.recipients.iter().flat_map(|r| &r.messages).map(|m| m.content.len()).max().unwrap_or(0);
        if largest > hush_wire::limits::MAX_ENVELOPE_BYTES || prost::Message::encoded_len(&req) > MAX_SEND_BYTES {
            self.refused_too_large += 1;
            let error = SendError { code: SendErrorCode::EnvelopeTooLarge as i32, ..Default::default() };
            return SendResponse { request_id: req.request_id, result: Some(send_response::Result::Error(error)) };
        }
        if self.mailbox_full_next > 0 && !req.online_only {
            self.mailbox_full_next -= 1;
            let error = SendError {
                code: SendErrorCode::MailboxFull as i32,
                message: "mailbox full".into(),
                ..Default::default()
            };
            return SendResponse { request_id: req.request_id, result: Some(send_response::Result::Error(error)) };
        }
        let mut mismatches = Vec::new();
        for r in &req.recipients {
            let account = Uuid::from_slice(&r.account_id).unwrap_or_else(|e| panic!("{e}"));
            let existing = &self.accounts[&account].devices;
            let exclude = (account == sender).then_some(sender_device);
            let mut m = DeviceMismatch { account_id: r.account_id.clone(), ..Default::default() };
            for (id, d) in existing.iter().filter(|(id, _)| Some(**id) != exclude) {
                match r.messages.iter().find(|x| x.device_id == *id) {
                    None => m.missing.push(*id),
                    Some(x) if x.registration_id != d.keys.registration_id => m.stale.push(*id),
                    Some(_) => {}
                }
            }
            for x in &r.messages {
                if !existing.contains_key(&x.device_id) || exclude == Some(x.device_id) {
                    m.extra.push(x.device_id);
                }
            }
            if !(m.missing.is_empty() && m.extra.is_empty() && m.stale.is_empty()) {
                mismatches.push(m);
            }
        }
        // As hushd: a stored send that does not list the sender's own account must, when the
        // account has other devices, so that each gets a copy (a sent transcript).
        let own_listed = req.recipients.iter().any(|r| r.account_id.as_ref() == sender.as_bytes());
        if !req.online_only && !own_listed {
            let missing: Vec<u32> =
                self.accounts[&sender].devices.keys().copied().filter(|d| *d != sender_device).collect();
            if !missing.is_empty() {
                let account_id = sender.as_bytes().to_vec().into();
                mismatches.push(DeviceMismatch { account_id, missing, ..Default::default() });
            }
        }
        if !mismatches.is_empty() {
            let error = SendError { code: SendErrorCode::DeviceMismatch as i32, mismatches, ..Default::default() };
            return SendResponse { request_id: req.request_id, result: Some(send_response::Result::Error(error)) };
        }
        for r in req.recipients {
            let account = Uuid::from_slice(&r.account_id).unwrap_or_else(|e| panic!("{e}"));
            for m in r.messages {
                if req.online_only && !online.contains(&(account, m.device_id)) {
                    continue;
                }
                self.next_seq += 1;
                let seq = if req.online_only { 0 } else { self.next_seq };
                let env = Envelope {
                    seq,
                    server_timestamp: self.now,
                    kind: m.kind,
                    content: m.content,
                    ..Envelope::default()
                };
                // Online-only envelopes are kept under a unique key until pushed once.
                let key = if req.online_only { u64::MAX - self.next_seq } else { seq };
                self.device_mut(account, m.device_id).mailbox.insert(key, env);
            }
        }
        let ok = SendOk { server_timestamp: self.now, group_seq: 0 };
        SendResponse { request_id: req.request_id, result: Some(send_response::Result::Ok(ok)) }
    }

    pub fn rest(&mut self, account: Uuid, device: u32, call: RestCall) -> Result<RestAnswer, RestFailure> {
        let not_found =
            || RestFailure { status: Some(404), code: "unknown_account".into(), message: "no such account".into() };
        match call {
            RestCall::LookupAccount(id) => {
                self.accounts.contains_key(&id).then(|| RestAnswer::Account(self.info(id))).ok_or_else(not_found)
            }
            RestCall::FetchBundles { account: target, devices } => {
                let a = self.accounts.get_mut(&target).ok_or_else(not_found)?;
                let mut out = Vec::new();
                for (id, d) in a.devices.iter_mut() {
                    if devices.as_ref().is_some_and(|list| !list.contains(id)) {
                        continue;
                    }
                    let kyber = d.keys.one_time_kyber_prekeys.pop();
                    out.push(DeviceBundle {
                        device_id: *id,
                        registration_id: d.keys.registration_id,
                        signed_prekey: d.keys.signed_prekey.clone(),
                        kyber_last_resort: kyber.is_none(),
                        kyber_prekey: kyber.unwrap_or_else(|| d.keys.kyber_last_resort.clone()),
                        prekey: d.keys.one_time_prekeys.pop(),
                    });
                }
                Ok(RestAnswer::Bundles(PreKeyBundles {
                    account_id: target,
                    identity_key: B64(a.identity.clone()),
                    devices: out,
                }))
            }
            RestCall::FetchCertificate => {
                let identity = self.accounts[&account].identity.clone();
                let expires_at = self.now + 24 * 3600 * 1000;
                let cert = self
                    .keys
                    .issue_sender_certificate(account, device, &identity, expires_at, &mut rand::rng())
                    .unwrap_or_else(|e| panic!("{e}"));
                Ok(RestAnswer::Certificate(SenderCertificateResponse { certificate: B64(cert), expires_at }))
            }
            RestCall::FetchOwnDevices => {
                let devices = self.accounts[&account]
                    .devices
                    .iter()
                    .map(|(id, d)| DeviceInfo {
                        device_id: *id,
                        registration_id: d.keys.registration_id,
                        name: None,
                        created_at: 0,
                        last_seen: None,
                    })
                    .collect();
                Ok(RestAnswer::Devices(DeviceList { devices }))
            }
            RestCall::PrekeyCount => {
                let d = &self.accounts[&account].devices[&device].keys;
                let real = (d.one_time_prekeys.len() as u32, d.one_time_kyber_prekeys.len() as u32);
                let (ec, kyber) = self.report_count.map(|n| (n, n)).unwrap_or(real);
                Ok(RestAnswer::PrekeyCount(PreKeyCount { ec, kyber, refill_below: 10 }))
            }
            RestCall::CreateGroup(_)
            | RestCall::GetGroup(_)
            | RestCall::UpdateGroup { .. }
            | RestCall::AddMembers { .. }
            | RestCall::RemoveMember { .. }
            | RestCall::SetRole { .. }
            | RestCall::DeleteGroup(_) => self.group_rest(account, call),
            RestCall::UploadPrekeys(_) if self.refuse_uploads => {
                Err(RestFailure { status: Some(500), code: "internal".into(), message: "refused".into() })
            }
            RestCall::UploadPrekeys(upload) => {
                self.uploads += 1;
                let d = &mut self.device_mut(account, device).keys;
                if let Some(signed) = upload.signed_prekey {
                    d.signed_prekey = signed;
                }
                if let Some(kyber) = upload.kyber_last_resort {
                    d.kyber_last_resort = kyber;
                }
                d.one_time_prekeys.extend(upload.one_time_prekeys);
                d.one_time_kyber_prekeys.extend(upload.one_time_kyber_prekeys);
                Ok(RestAnswer::Done)
            }
        }
    }
}
