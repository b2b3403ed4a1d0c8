//! The conformance suite of [`Store`] (STYLE.md item 4): every backend runs the same
//! tests. The tests are plain `async fn(&dyn Store)`s in the submodules; a backend
//! joins with one line, `store_conformance!(name, async_expression_giving_a_TestStore)`,
//! which makes each of them a `#[tokio::test]` in `mod name`.
//!
//! Postgres is not optional: its tests create a scratch database through the admin
//! URL in `HUSH_TEST_POSTGRES` (default [`DEFAULT_POSTGRES`]) and fail, naming the URL,
//! when it cannot be reached.

use std::fmt::Display;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use hush_server::store::postgres::PostgresStore;
use hush_server::store::sqlite::SqliteStore;
use hush_server::store::{
    Accepted, Committed, DeviceKey, MailboxId, NewAccount, NewDeviceRecord, OneTimeAllowed, OneTimeKey,
    OutgoingMessage, RecipientBatch, SendItem, SendOutcome, SignedKey, Store, StoreError, Write,
};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

mod accounts;
mod groups;
mod idempotency;
mod link;
mod mailbox;
mod prekeys;
mod push;
mod sends;
mod streams;

/// Instantiates every conformance test as a `#[tokio::test]` in `mod $backend`,
/// each on a fresh store from `$open` (an async expression giving a [`TestStore`]).
macro_rules! store_conformance {
    ($backend:ident, $open:expr) => {
        store_conformance!(@tests $backend, $open;
            accounts::create_and_look_up_account,
            accounts::taken_username_stores_nothing,
            accounts::add_device_takes_the_lowest_free_id,
            accounts::add_device_refuses_beyond_max_devices,
            accounts::add_device_to_unknown_account_fails,
            accounts::device_records_are_stored_as_given,
            accounts::touch_device_keeps_day_precision,
            accounts::reused_device_id_starts_an_empty_mailbox,
            accounts::mailbox_ids_are_never_reused,
            prekeys::one_time_keys_are_handed_out_once_lowest_first,
            prekeys::take_bundles_for_one_device_or_all,
            prekeys::a_refused_device_gets_last_resort_keys_and_keeps_its_one_time_keys,
            prekeys::upload_adds_one_time_keys_and_replaces_signed_ones,
            prekeys::prekey_calls_name_unknown_accounts_and_devices,
            prekeys::concurrent_takers_never_share_a_key,
            sends::seqs_start_at_one_and_increase_per_device,
            sends::fetch_is_oldest_first_after_seq_and_limited,
            sends::ack_deletes_only_the_given_seqs_of_the_given_mailbox,
            sends::device_mismatch_is_listed_and_nothing_is_stored,
            sends::own_account_excludes_the_sending_device,
            sends::omitting_own_other_devices_is_a_mismatch,
            sends::unknown_accounts_are_refused,
            sends::full_mailbox_refuses_until_acked,
            sends::batch_commits_or_refuses_each_item_on_its_own,
            sends::batch_counts_its_own_envelopes_against_the_limit,
            sends::check_devices_stores_nothing,
            sends::concurrent_crossing_batches_keep_seqs_unique,
            mailbox::expire_removes_exactly_the_due_envelopes,
            mailbox::expiry_makes_room_in_a_full_mailbox,
            mailbox::removing_a_device_deletes_its_mailbox_and_prekeys,
            mailbox::batched_reads_answer_each_read_as_a_single_one_would,
            idempotency::resend_in_a_later_batch_is_answered_with_the_first_result,
            idempotency::a_stored_key_is_found_without_a_commit_and_only_for_its_device,
            idempotency::resend_in_the_same_batch_is_stored_once,
            idempotency::a_refused_send_does_not_record_its_key,
            idempotency::the_same_key_from_another_device_is_another_send,
            idempotency::keys_are_forgotten_after_the_retention,
            idempotency::sends_without_a_key_are_never_deduplicated,
            idempotency::trust_root_is_recorded_once_and_compared,
            push::a_push_target_is_set_replaced_and_read_back_as_given,
            push::push_targets_are_per_device_and_unknown_devices_are_refused,
            push::removing_a_push_target_only_if_unchanged_keeps_a_newer_one,
            push::a_removed_device_takes_its_push_target_and_a_reused_id_starts_without,
            link::a_link_token_adds_one_device_once,
            link::unknown_expired_and_foreign_tokens_are_refused_and_add_nothing,
            link::a_full_account_keeps_its_token_unused,
            link::two_concurrent_uses_of_a_token_add_one_device,
            link::a_channel_is_claimed_once_and_not_after_expiry_or_close,
            link::expiry_removes_due_channels_and_old_tokens,
            link::a_device_is_renamed_and_its_name_removed,
            link::an_archive_is_uploaded_completed_read_and_deleted,
            link::an_archive_is_capped_and_belongs_to_its_account,
            link::expired_archives_are_unreadable_then_swept,
        );
    };
    (@tests $backend:ident, $open:expr; $($group:ident :: $test:ident),* $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let store: TestStore = $open.await;
                    super::$group::$test(&*store).await;
                }
            )*
        }
    };
}

/// The group tests, in modules of their own (`groups_sqlite`, `groups_postgres`) so
/// `-E 'test(groups)'` selects them.
macro_rules! group_conformance {
    ($backend:ident, $open:expr) => {
        store_conformance!(@tests $backend, $open;
            groups::creating_a_group_writes_the_change_once_to_every_member_device,
            groups::a_non_member_learns_nothing,
            groups::roles_are_enforced_and_refusals_store_nothing,
            groups::a_group_send_waits_for_distributions_and_is_stored_once,
            groups::a_group_message_is_deleted_with_its_last_reference,
            groups::after_a_removal_the_old_epoch_is_refused_and_the_removed_member_gets_nothing_more,
            groups::a_distribution_names_only_member_devices_with_their_registration_ids,
            groups::group_writes_reach_full_mailboxes,
            groups::removing_a_device_rotates_its_groups_and_drops_its_references,
            groups::group_messages_expire_with_their_references,
            groups::a_resent_group_message_gets_its_first_group_seq,
            groups::deleting_a_group_tells_every_member_device_then_it_is_gone,
            groups::a_batch_mixes_sends_distributions_and_group_messages_in_order,
            groups::concurrent_group_writes_keep_group_seqs_unique,
            streams::a_group_above_the_threshold_is_read_from_its_stream,
            streams::stream_acks_advance_cursors_and_free_what_every_member_read,
            streams::a_group_growing_past_the_threshold_switches_at_the_change,
            streams::a_group_shrinking_to_the_threshold_moves_unread_messages_into_mailboxes,
            streams::a_departing_member_reads_the_change_that_removed_it_and_nothing_after,
            streams::a_new_device_of_a_member_reads_the_stream_from_now_on,
            streams::stream_messages_expire,
        );
    };
}

store_conformance!(sqlite, open_sqlite());
store_conformance!(postgres, open_postgres());
group_conformance!(groups_sqlite, open_sqlite());
group_conformance!(groups_postgres, open_postgres());

/// A store under test and whatever must outlive it (a temporary directory, a scratch database).
pub struct TestStore {
    // Dropped first: the store closes before its files or database go away.
    store: Arc<dyn Store>,
    _keep: Box<dyn Send>,
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// A fresh SQLite store in a temporary directory.
pub async fn open_sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/hush.db", dir.path().display());
    let store = SqliteStore::open(&url).await.unwrap();
    TestStore { store: Arc::new(store), _keep: Box::new(dir) }
}

/// Where the Postgres tests create their scratch databases unless `HUSH_TEST_POSTGRES` says otherwise:
/// the `postgres` superuser that every PostgreSQL install has, over TCP with trust auth, as on the
/// project's machines and CI.
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh Postgres store on a scratch database of its own, dropped with the store.
pub async fn open_postgres() -> TestStore {
    let admin_url = std::env::var("HUSH_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned());
    let required = |e: &dyn Display| -> ! {
        panic!(
            "Postgres is required for the store tests: {admin_url} failed: {e}. Start PostgreSQL there, \
             or set HUSH_TEST_POSTGRES to the URL of a role that may CREATE DATABASE."
        )
    };
    let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| required(&e));
    let name = format!("hush_test_{:016x}", rand::random::<u64>());
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap_or_else(|e| required(&e));
    let _ = admin.close().await;
    let scratch = ScratchDatabase { admin_url: admin_url.clone(), name };
    let url = with_database(&admin_url, &scratch.name);
    let store = PostgresStore::open(&url).await.unwrap_or_else(|e| required(&e));
    TestStore { store: Arc::new(store), _keep: Box::new(scratch) }
}

/// `url` with its database path replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (main, query) = url.split_once('?').map_or((url, None), |(m, q)| (m, Some(q)));
    let host_start = main.find("://").map_or(0, |i| i + 3);
    let host_end = main[host_start..].find('/').map_or(main.len(), |i| host_start + i);
    let mut out = format!("{}/{database}", &main[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Drops a scratch database, even when the test panicked (best effort).
struct ScratchDatabase {
    admin_url: String,
    name: String,
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await, so this runs on a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&url).await.ok()?;
                admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the scratch database {}", self.name);
        }
    }
}

// ---- builders shared by the tests ----

/// 2025-01-01T00:00:00Z, a UTC midnight.
pub const T0: u64 = 1_735_689_600_000;
/// One day in ms.
pub const DAY: u64 = 86_400_000;
/// An empty mailbox's seqs.
pub const NO_SEQS: [u64; 0] = [];
/// Room enough that no test fills a mailbox by accident.
pub const ROOMY: u64 = 100_000;

/// Lets every bundle fetch take one-time keys.
pub const ALL: OneTimeAllowed<'static> = &|_| true;

/// A signed key whose bytes name its id, so a mix-up shows.
pub fn signed(id: u32) -> SignedKey {
    SignedKey { id, public_key: [b"pub".as_slice(), &id.to_be_bytes()].concat(), signature: id.to_be_bytes().to_vec() }
}

/// A one-time EC key whose bytes name its id.
pub fn one_time(id: u32) -> OneTimeKey {
    OneTimeKey { id, public_key: [b"ec".as_slice(), &id.to_be_bytes()].concat() }
}

/// A device record with the given registration id and no one-time keys.
pub fn record(registration_id: u32) -> NewDeviceRecord {
    NewDeviceRecord {
        registration_id,
        auth_key: [u8::try_from(registration_id % 256).unwrap(); 32],
        name: Some(format!("device {registration_id}")),
        signed_prekey: signed(1),
        kyber_last_resort: signed(1000),
        one_time_prekeys: Vec::new(),
        one_time_kyber_prekeys: Vec::new(),
        created_at: T0,
    }
}

/// An account whose primary device has registration id 100.
pub fn new_account(username: &str) -> NewAccount {
    NewAccount { id: Uuid::new_v4(), username: username.to_owned(), identity_key: vec![5; 33], device: record(100) }
}

/// Creates an account (primary device registration id 100) and returns its id.
pub async fn create(store: &dyn Store, username: &str) -> Uuid {
    let account = new_account(username);
    store.create_account(&account).await.unwrap();
    account.id
}

/// A device key.
pub fn dk(account: Uuid, device_id: u32) -> DeviceKey {
    DeviceKey { account, device_id }
}

/// A device's mailbox.
pub async fn mailbox(store: &dyn Store, key: DeviceKey) -> MailboxId {
    store.device(key).await.unwrap().unwrap_or_else(|| panic!("no device {key:?}")).mailbox
}

/// One recipient: (device id, registration id) pairs, each given `content`.
pub fn to(account: Uuid, devices: &[(u32, u32)], content: &str) -> RecipientBatch {
    let messages = devices
        .iter()
        .map(|&(device_id, registration_id)| OutgoingMessage {
            device_id,
            registration_id,
            kind: 3,
            content: Bytes::from(content.to_owned()),
        })
        .collect();
    RecipientBatch { account, messages }
}

/// A send at `T0` that expires a day later.
pub fn send(sender: DeviceKey, recipients: Vec<RecipientBatch>) -> SendItem {
    SendItem { sender, recipients, server_ts: T0, expires_at: T0 + DAY, idempotency_key: None }
}

/// Commits one-to-one sends in one batch.
pub async fn commit_all(
    store: &dyn Store,
    items: &[SendItem],
    max_mailbox: u64,
) -> Result<Vec<SendOutcome>, StoreError> {
    let writes: Vec<Write> = items.iter().cloned().map(Write::Direct).collect();
    store.commit(&writes, max_mailbox).await
}

/// Commits one item and returns its outcome.
pub async fn commit(store: &dyn Store, item: SendItem, max_mailbox: u64) -> SendOutcome {
    let mut outcomes = commit_all(store, &[item], max_mailbox).await.unwrap();
    assert_eq!(outcomes.len(), 1, "one outcome per item");
    outcomes.remove(0)
}

/// The committed envelopes of an outcome that must have succeeded.
pub fn accepted(outcome: SendOutcome) -> Vec<Committed> {
    match outcome {
        Ok(Accepted::Stored { committed, .. }) => committed,
        Ok(Accepted::Duplicate { server_ts, .. }) => panic!("the send was taken for a resend of one at {server_ts}"),
        Err(rejection) => panic!("the send was refused: {rejection:?}"),
    }
}

/// The seq of the first envelope a send stored now, if it was stored now.
pub fn first_seq(outcome: &SendOutcome) -> Option<u64> {
    match outcome {
        Ok(Accepted::Stored { committed, .. }) => committed.first().map(|c| c.envelope.seq),
        _ => None,
    }
}

/// The seqs in a mailbox, oldest first.
pub async fn seqs_in(store: &dyn Store, mailbox: MailboxId) -> Vec<u64> {
    store.fetch(mailbox, 0, 1000).await.unwrap().iter().map(|e| e.seq).collect()
}
