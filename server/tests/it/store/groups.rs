//! Groups: rosters and roles, group messages stored once with a per-group seq,
//! distributions, epochs, and the references in member mailboxes.

use bytes::Bytes;
use hush_server::store::{
    Accepted, ChangeCommitted, DistributeItem, GroupChange, GroupError, GroupOp, GroupRole, GroupSendItem,
    GroupSettings, Mismatch, NewGroup, SendOutcome, SendRejection, Store, Write,
};
use hush_wire::frames::{EnvelopeKind, RosterChange, roster_change};
use prost::Message as _;
use uuid::Uuid;

use super::{DAY, ROOMY, T0, create, dk, mailbox, record, to};

pub(super) fn new_group(owner: Uuid, members: &[Uuid]) -> NewGroup {
    NewGroup {
        id: Uuid::new_v4(),
        owner,
        members: members.to_vec(),
        title: b"title".to_vec(),
        description: Vec::new(),
        avatar: Vec::new(),
        members_can_add: false,
        server_ts: T0,
        expires_at: T0 + DAY,
        max_members: 10,
        read_above: 100,
    }
}

pub(super) async fn make_group(store: &dyn Store, owner: Uuid, members: &[Uuid]) -> ChangeCommitted {
    store.create_group(&new_group(owner, members)).await.unwrap()
}

pub(super) fn change(group: Uuid, actor: Uuid, op: GroupOp) -> GroupChange {
    GroupChange { group, actor, op, server_ts: T0 + 1, expires_at: T0 + DAY, max_members: 10, read_above: 100 }
}

pub(super) async fn apply(
    store: &dyn Store,
    group: Uuid,
    actor: Uuid,
    op: GroupOp,
) -> Result<ChangeCommitted, GroupError> {
    store.change_group(&change(group, actor, op)).await
}

pub(super) fn group_send(sender: (Uuid, u32), group: Uuid, epoch: u64, content: &str) -> Write {
    Write::Group(GroupSendItem {
        sender: dk(sender.0, sender.1),
        group,
        epoch,
        content: Bytes::from(content.to_owned()),
        server_ts: T0 + 2,
        expires_at: T0 + DAY,
        idempotency_key: None,
    })
}

/// A distribution from `sender` to the given (account, [(device, registration id)]).
pub(super) fn distribute(sender: (Uuid, u32), group: Uuid, epoch: u64, to_devices: &[(Uuid, &[(u32, u32)])]) -> Write {
    let mut recipients = Vec::new();
    for &(account, devices) in to_devices {
        let mut batch = to(account, devices, "skdm");
        for m in &mut batch.messages {
            m.kind = EnvelopeKind::SealedSender as i32;
        }
        recipients.push(batch);
    }
    Write::Distribute(DistributeItem {
        sender: dk(sender.0, sender.1),
        group,
        epoch,
        recipients,
        server_ts: T0 + 2,
        expires_at: T0 + DAY,
        idempotency_key: None,
    })
}

pub(super) async fn write(store: &dyn Store, w: Write, max_mailbox: u64) -> SendOutcome {
    let mut outcomes = store.commit(&[w], max_mailbox).await.unwrap();
    outcomes.remove(0)
}

pub(super) fn group_seq(outcome: &SendOutcome) -> Option<u64> {
    match outcome {
        Ok(Accepted::Stored { group_seq, .. } | Accepted::Duplicate { group_seq, .. }) => *group_seq,
        Err(e) => panic!("refused: {e:?}"),
    }
}

/// The (kind, group seq) of every envelope in a device's mailbox.
pub(super) async fn inbox(store: &dyn Store, account: Uuid, device: u32) -> Vec<(i32, u64)> {
    let mb = mailbox(store, dk(account, device)).await;
    store.fetch(mb, 0, 1000).await.unwrap().iter().map(|e| (e.kind, e.group.map_or(0, |g| g.seq))).collect()
}

pub(super) const CHANGE: i32 = EnvelopeKind::RosterChange as i32;
pub(super) const MESSAGE: i32 = EnvelopeKind::GroupMessage as i32;
pub(super) const SEALED: i32 = EnvelopeKind::SealedSender as i32;

pub async fn creating_a_group_writes_the_change_once_to_every_member_device(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(bob, &record(102), 6).await.unwrap();
    let done = make_group(store, alice, &[bob, bob, alice]).await;
    assert_eq!((done.roster_version, done.epoch, done.group_seq), (1, 1, 1));
    assert_eq!(done.committed.len(), 3, "alice.1, bob.1, bob.2");
    assert_eq!(store.group_message_count().await.unwrap(), 1, "stored once");
    let mb = mailbox(store, dk(bob, 2)).await;
    let envelopes = store.fetch(mb, 0, 10).await.unwrap();
    assert_eq!(envelopes.len(), 1);
    let e = &envelopes[0];
    assert_eq!(e.kind, CHANGE);
    assert_eq!(e.group.map(|g| (g.group, g.seq)), Some((done.group, 1)));
    let change = RosterChange::decode(e.content.as_ref()).unwrap();
    assert_eq!(change.kind(), roster_change::Kind::Created);
    assert_eq!(change.actor.as_ref(), alice.as_bytes());
    assert_eq!(change.accounts, vec![Bytes::from(bob.as_bytes().to_vec())]);
    let group = store.group(done.group, bob).await.unwrap();
    assert_eq!(
        group.members.iter().map(|m| (m.account, m.role)).collect::<Vec<_>>(),
        [(alice, GroupRole::Owner), (bob, GroupRole::Member)]
    );
    assert_eq!(group.title, b"title");
}

pub async fn a_non_member_learns_nothing(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let g = make_group(store, alice, &[bob]).await.group;
    assert!(matches!(store.group(g, carol).await, Err(GroupError::NotAMember)));
    assert!(matches!(store.group(Uuid::new_v4(), alice).await, Err(GroupError::NotAMember)));
    assert!(store.groups_of(carol).await.unwrap().is_empty());
    let listed = store.groups_of(bob).await.unwrap();
    assert_eq!(listed.iter().map(|g| (g.id, g.role)).collect::<Vec<_>>(), [(g, GroupRole::Member)]);
    let refused = apply(store, g, carol, GroupOp::Add(vec![carol])).await;
    assert!(matches!(refused, Err(GroupError::NotAMember)), "{refused:?}");
    let outcome = write(store, group_send((carol, 1), g, 1, "hi"), ROOMY).await;
    assert!(matches!(outcome, Err(SendRejection::NotAMember)), "{outcome:?}");
    let outcome = write(store, distribute((carol, 1), g, 1, &[(bob, &[(1, 100)])]), ROOMY).await;
    assert!(matches!(outcome, Err(SendRejection::NotAMember)), "{outcome:?}");
}

pub async fn roles_are_enforced_and_refusals_store_nothing(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let dave = create(store, "dave").await;
    let g = make_group(store, alice, &[bob, carol]).await.group;
    apply(store, g, alice, GroupOp::SetRole(bob, GroupRole::Admin)).await.unwrap();
    let before = store.group(g, alice).await.unwrap();
    let refusals: Vec<(Uuid, GroupOp, &str)> = vec![
        (carol, GroupOp::Add(vec![dave]), "forbidden"),
        (carol, GroupOp::Update(GroupSettings { title: Some(vec![1]), ..GroupSettings::default() }), "forbidden"),
        (bob, GroupOp::Remove(alice), "forbidden"),
        (bob, GroupOp::SetRole(carol, GroupRole::Admin), "forbidden"),
        (bob, GroupOp::Delete, "forbidden"),
        (alice, GroupOp::Remove(alice), "last_owner"),
        (alice, GroupOp::SetRole(alice, GroupRole::Admin), "last_owner"),
        (alice, GroupOp::Add(vec![carol]), "already_member"),
        (alice, GroupOp::Add(vec![Uuid::new_v4()]), "unknown_account"),
        (alice, GroupOp::Remove(dave), "not_in_group"),
    ];
    for (actor, op, what) in refusals {
        let got = apply(store, g, actor, op.clone()).await;
        let ok = matches!(
            (&got, what),
            (Err(GroupError::Forbidden), "forbidden")
                | (Err(GroupError::LastOwner), "last_owner")
                | (Err(GroupError::AlreadyMember(_)), "already_member")
                | (Err(GroupError::UnknownAccount(_)), "unknown_account")
                | (Err(GroupError::NotInGroup(_)), "not_in_group")
        );
        assert!(ok, "{op:?} by {actor}: expected {what}, got {got:?}");
    }
    assert_eq!(store.group(g, alice).await.unwrap(), before, "nothing of a refused change is stored");
    // Admins add and remove members; members leave; members add when the setting allows it.
    apply(store, g, bob, GroupOp::Add(vec![dave])).await.unwrap();
    apply(store, g, bob, GroupOp::Remove(dave)).await.unwrap();
    apply(store, g, bob, GroupOp::Update(GroupSettings { members_can_add: Some(true), ..Default::default() }))
        .await
        .unwrap();
    apply(store, g, carol, GroupOp::Add(vec![dave])).await.unwrap();
    apply(store, g, dave, GroupOp::Remove(dave)).await.unwrap();
    let mut full = change(g, alice, GroupOp::Add(vec![dave]));
    full.max_members = 3;
    assert!(matches!(store.change_group(&full).await, Err(GroupError::GroupFull(3))));
    let after = store.group(g, alice).await.unwrap();
    assert_eq!(after.roster_version, before.roster_version + 5);
    assert_eq!(after.epoch, before.epoch + 2, "two departures");
}

pub async fn a_group_send_waits_for_distributions_and_is_stored_once(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(bob, &record(102), 6).await.unwrap();
    store.add_device(alice, &record(202), 6).await.unwrap();
    let g = make_group(store, alice, &[bob]).await.group;
    let outcome = write(store, group_send((alice, 1), g, 1, "m1"), ROOMY).await;
    let Err(SendRejection::MissingDistributions { current_epoch: 1, mismatches }) = outcome else {
        panic!("{outcome:?}")
    };
    let mut expected = vec![
        Mismatch { account: alice, missing: vec![2], ..Mismatch::default() },
        Mismatch { account: bob, missing: vec![1, 2], ..Mismatch::default() },
    ];
    expected.sort_by_key(|m| m.account);
    assert_eq!(mismatches, expected, "per account, in account order");
    let d = distribute((alice, 1), g, 1, &[(bob, &[(1, 100), (2, 102)]), (alice, &[(2, 202)])]);
    assert_eq!(group_seq(&write(store, d, ROOMY).await), None);
    assert_eq!(inbox(store, bob, 2).await, [(CHANGE, 1), (SEALED, 0)]);
    assert_eq!(group_seq(&write(store, group_send((alice, 1), g, 1, "m1"), ROOMY).await), Some(2));
    assert_eq!(group_seq(&write(store, group_send((alice, 1), g, 1, "m2"), ROOMY).await), Some(3));
    for (account, device) in [(bob, 1), (bob, 2), (alice, 2)] {
        assert_eq!(inbox(store, account, device).await, [(CHANGE, 1), (SEALED, 0), (MESSAGE, 2), (MESSAGE, 3)]);
    }
    assert_eq!(inbox(store, alice, 1).await, [(CHANGE, 1)], "the sender gets no copy");
    let mb = mailbox(store, dk(bob, 1)).await;
    let contents: Vec<Bytes> = store.fetch(mb, 2, 10).await.unwrap().into_iter().map(|e| e.content).collect();
    assert_eq!(contents, [Bytes::from("m1"), Bytes::from("m2")], "the payload is joined in");
    assert_eq!(store.group_message_count().await.unwrap(), 3, "the change and two messages, once each");
    // Bob's other device still lacks one from alice's second device.
    let outcome = write(store, group_send((alice, 2), g, 1, "m3"), ROOMY).await;
    assert!(matches!(outcome, Err(SendRejection::MissingDistributions { .. })), "{outcome:?}");
}

pub async fn a_group_message_is_deleted_with_its_last_reference(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(bob, &record(102), 6).await.unwrap();
    let g = make_group(store, alice, &[bob]).await.group;
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100), (2, 102)])]), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "m"), ROOMY).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 2);
    let (one, two) = (mailbox(store, dk(bob, 1)).await, mailbox(store, dk(bob, 2)).await);
    let alice_box = mailbox(store, dk(alice, 1)).await;
    store.ack(&[(one, vec![1, 2, 3])]).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 2, "bob.2 has not acked yet");
    store.ack(&[(two, vec![3])]).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 1, "the message is gone, the change waits for two");
    store.ack(&[(two, vec![1]), (alice_box, vec![1])]).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 0);
    assert_eq!(store.envelope_count().await.unwrap(), 1, "bob.2's distribution is still there");
}

pub async fn after_a_removal_the_old_epoch_is_refused_and_the_removed_member_gets_nothing_more(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let g = make_group(store, alice, &[bob, carol]).await.group;
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100)]), (carol, &[(1, 100)])]), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "before"), ROOMY).await.unwrap();
    let removed = apply(store, g, alice, GroupOp::Remove(carol)).await.unwrap();
    assert_eq!((removed.epoch, removed.group_seq), (2, 3));
    assert_eq!(removed.committed.len(), 3, "alice, bob and carol get the change");
    let outcome = write(store, group_send((alice, 1), g, 1, "stale"), ROOMY).await;
    assert!(matches!(outcome, Err(SendRejection::StaleEpoch { current_epoch: 2 })), "{outcome:?}");
    let outcome = write(store, group_send((alice, 1), g, 2, "no keys yet"), ROOMY).await;
    let Err(SendRejection::MissingDistributions { mismatches, .. }) = outcome else { panic!("{outcome:?}") };
    assert_eq!(mismatches, vec![Mismatch { account: bob, missing: vec![1], ..Mismatch::default() }]);
    let outcome = write(store, distribute((alice, 1), g, 2, &[(carol, &[(1, 100)])]), ROOMY).await;
    let Err(SendRejection::GroupDeviceMismatch { mismatches, .. }) = outcome else { panic!("{outcome:?}") };
    assert_eq!(mismatches, vec![Mismatch { account: carol, extra: vec![1], ..Mismatch::default() }]);
    write(store, distribute((alice, 1), g, 2, &[(bob, &[(1, 100)])]), ROOMY).await.unwrap();
    assert_eq!(group_seq(&write(store, group_send((alice, 1), g, 2, "after"), ROOMY).await), Some(4));
    assert_eq!(inbox(store, carol, 1).await, [(CHANGE, 1), (SEALED, 0), (MESSAGE, 2), (CHANGE, 3)]);
    assert_eq!(
        inbox(store, bob, 1).await,
        [(CHANGE, 1), (SEALED, 0), (MESSAGE, 2), (CHANGE, 3), (SEALED, 0), (MESSAGE, 4)]
    );
    let mb = mailbox(store, dk(carol, 1)).await;
    let last = store.fetch(mb, 3, 10).await.unwrap();
    let change = RosterChange::decode(last[0].content.as_ref()).unwrap();
    assert_eq!((change.kind(), change.epoch), (roster_change::Kind::Removed, 2));
    assert_eq!(change.accounts, vec![Bytes::from(carol.as_bytes().to_vec())]);
}

pub async fn a_distribution_names_only_member_devices_with_their_registration_ids(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = make_group(store, alice, &[bob]).await.group;
    let outcome =
        write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 999), (5, 1)]), (alice, &[(1, 100)])]), ROOMY).await;
    let Err(SendRejection::GroupDeviceMismatch { current_epoch: 1, mismatches }) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        mismatches,
        vec![
            Mismatch { account: bob, extra: vec![5], stale: vec![1], ..Mismatch::default() },
            Mismatch { account: alice, extra: vec![1], ..Mismatch::default() },
        ]
    );
    let outcome = write(store, distribute((alice, 1), g, 7, &[(bob, &[(1, 100)])]), ROOMY).await;
    assert!(matches!(outcome, Err(SendRejection::StaleEpoch { current_epoch: 1 })), "{outcome:?}");
    assert_eq!(inbox(store, bob, 1).await, [(CHANGE, 1)], "nothing stored");
}

pub async fn group_writes_reach_full_mailboxes(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = make_group(store, alice, &[bob]).await.group;
    // Bob's mailbox holds the created change: with a limit of 1 it is full.
    let direct = write(store, Write::Direct(super::send(dk(alice, 1), vec![to(bob, &[(1, 100)], "x")])), 1).await;
    assert!(matches!(direct, Err(SendRejection::MailboxFull(_))), "{direct:?}");
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100)])]), 1).await.unwrap();
    assert_eq!(group_seq(&write(store, group_send((alice, 1), g, 1, "m"), 1).await), Some(2));
    apply(store, g, alice, GroupOp::Update(GroupSettings { title: Some(vec![2]), ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(inbox(store, bob, 1).await, [(CHANGE, 1), (SEALED, 0), (MESSAGE, 2), (CHANGE, 3)]);
}

pub async fn removing_a_device_rotates_its_groups_and_drops_its_references(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    store.add_device(bob, &record(102), 6).await.unwrap();
    let g = make_group(store, alice, &[bob]).await.group;
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100), (2, 102)])]), ROOMY).await.unwrap();
    write(store, group_send((alice, 1), g, 1, "m"), ROOMY).await.unwrap();
    assert!(store.remove_device(dk(bob, 2)).await.unwrap());
    assert_eq!(store.group(g, alice).await.unwrap().epoch, 2, "the epoch grew in the same transaction");
    let outcome = write(store, group_send((alice, 1), g, 1, "stale"), ROOMY).await;
    assert!(matches!(outcome, Err(SendRejection::StaleEpoch { current_epoch: 2 })), "{outcome:?}");
    let (alice_box, one) = (mailbox(store, dk(alice, 1)).await, mailbox(store, dk(bob, 1)).await);
    store.ack(&[(alice_box, vec![1]), (one, vec![1, 2, 3])]).await.unwrap();
    assert_eq!(store.group_message_count().await.unwrap(), 0, "the removed device's references count no more");
}

pub async fn group_messages_expire_with_their_references(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = make_group(store, alice, &[bob]).await.group;
    assert_eq!(store.expire(T0 + DAY - 1).await.unwrap(), 0);
    assert_eq!(store.expire(T0 + DAY).await.unwrap(), 2);
    assert_eq!(store.group_message_count().await.unwrap(), 0);
    assert_eq!(store.envelope_count().await.unwrap(), 0);
    let done = apply(store, g, alice, GroupOp::Add(vec![create(store, "carol").await])).await.unwrap();
    assert_eq!(done.group_seq, 2, "group seqs go on");
}

pub async fn a_resent_group_message_gets_its_first_group_seq(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = make_group(store, alice, &[bob]).await.group;
    write(store, distribute((alice, 1), g, 1, &[(bob, &[(1, 100)])]), ROOMY).await.unwrap();
    let keyed = |content: &str| {
        let mut w = group_send((alice, 1), g, 1, content);
        if let Write::Group(item) = &mut w {
            item.idempotency_key = Some(Bytes::from_static(b"outbox-1"));
        }
        w
    };
    let outcomes = store.commit(&[keyed("m"), keyed("m")], ROOMY).await.unwrap();
    assert!(matches!(outcomes[0], Ok(Accepted::Stored { group_seq: Some(2), .. })), "{outcomes:?}");
    assert!(matches!(outcomes[1], Ok(Accepted::Duplicate { group_seq: Some(2), .. })), "{outcomes:?}");
    let later = write(store, keyed("m"), ROOMY).await;
    assert!(matches!(later, Ok(Accepted::Duplicate { group_seq: Some(2), .. })), "{later:?}");
    assert_eq!(store.group_message_count().await.unwrap(), 2);
}

pub async fn deleting_a_group_tells_every_member_device_then_it_is_gone(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = make_group(store, alice, &[bob]).await.group;
    let done = apply(store, g, alice, GroupOp::Delete).await.unwrap();
    assert_eq!(done.committed.len(), 2);
    let mb = mailbox(store, dk(bob, 1)).await;
    let last = store.fetch(mb, 1, 10).await.unwrap();
    assert_eq!(RosterChange::decode(last[0].content.as_ref()).unwrap().kind(), roster_change::Kind::Deleted);
    assert!(matches!(store.group(g, alice).await, Err(GroupError::NotAMember)));
    assert!(store.groups_of(alice).await.unwrap().is_empty());
    assert!(matches!(apply(store, g, alice, GroupOp::Delete).await, Err(GroupError::NotAMember)));
    let outcome = write(store, group_send((alice, 1), g, 2, "m"), ROOMY).await;
    assert!(matches!(outcome, Err(SendRejection::NotAMember)), "{outcome:?}");
}

pub async fn a_batch_mixes_sends_distributions_and_group_messages_in_order(store: &dyn Store) {
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let g = make_group(store, alice, &[bob]).await.group;
    let writes = vec![
        group_send((alice, 1), g, 1, "too early"),
        distribute((alice, 1), g, 1, &[(bob, &[(1, 100)])]),
        Write::Direct(super::send(dk(alice, 1), vec![to(bob, &[(1, 100)], "direct")])),
        group_send((alice, 1), g, 1, "in time"),
    ];
    let outcomes = store.commit(&writes, ROOMY).await.unwrap();
    assert!(matches!(outcomes[0], Err(SendRejection::MissingDistributions { .. })), "{outcomes:?}");
    assert!(outcomes[1].is_ok() && outcomes[2].is_ok());
    assert!(matches!(outcomes[3], Ok(Accepted::Stored { group_seq: Some(2), .. })), "{outcomes:?}");
    assert_eq!(inbox(store, bob, 1).await, [(CHANGE, 1), (SEALED, 0), (3, 0), (MESSAGE, 2)]);
}

/// Group messages, distributions, one-to-one sends, acks and roster changes from several tasks
/// at once (on Postgres: several connections, as several nodes would be): none deadlocks or
/// fails, group seqs are handed out once each without a gap, and every mailbox's seqs are
/// unique.
pub async fn concurrent_group_writes_keep_group_seqs_unique(store: &dyn Store) {
    use futures_util::future::join_all;
    let alice = create(store, "alice").await;
    let bob = create(store, "bob").await;
    let carol = create(store, "carol").await;
    let g = make_group(store, alice, &[bob, carol]).await.group;
    for sender in [alice, bob] {
        let others: Vec<(Uuid, &[(u32, u32)])> =
            [alice, bob, carol].into_iter().filter(|&a| a != sender).map(|a| (a, [(1, 100)].as_slice())).collect();
        write(store, distribute((sender, 1), g, 1, &others), ROOMY).await.unwrap();
    }
    const ROUNDS: usize = 12;
    let batches: Vec<Vec<Write>> = (0..ROUNDS)
        .map(|n| {
            let sender = if n % 2 == 0 { alice } else { bob };
            vec![
                group_send((sender, 1), g, 1, &format!("g{n}")),
                Write::Direct(super::send(dk(carol, 1), vec![to(alice, &[(1, 100)], "d"), to(bob, &[(1, 100)], "d")])),
            ]
        })
        .collect();
    let carol_box = mailbox(store, dk(carol, 1)).await;
    let writes = join_all(batches.iter().map(|b| store.commit(b, ROOMY)));
    let ack_lists: Vec<Vec<(hush_server::store::MailboxId, Vec<u64>)>> =
        (1..=4u64).map(|seq| vec![(carol_box, vec![seq])]).collect();
    let acks = join_all(ack_lists.iter().map(|list| store.ack(list)));
    let title = GroupOp::Update(GroupSettings { title: Some(vec![1]), ..GroupSettings::default() });
    let (results, acked, changed) = tokio::join!(writes, acks, apply(store, g, alice, title));
    let mut group_seqs: Vec<u64> = vec![changed.unwrap().group_seq];
    for outcome in results.into_iter().flat_map(|r| r.unwrap()) {
        if let Some(seq) = group_seq(&outcome) {
            group_seqs.push(seq);
        }
    }
    assert!(acked.into_iter().all(|r| r.is_ok()));
    group_seqs.sort_unstable();
    let expected: Vec<u64> = (2..=(ROUNDS as u64 + 2)).collect();
    assert_eq!(group_seqs, expected, "after the created change, one seq per message and change");
    for account in [alice, bob, carol] {
        let mb = mailbox(store, dk(account, 1)).await;
        let seqs: Vec<u64> = store.fetch(mb, 0, 1000).await.unwrap().iter().map(|e| e.seq).collect();
        let mut unique = seqs.clone();
        unique.dedup();
        assert_eq!(seqs, unique, "{account}: mailbox seqs unique and in order");
    }
    assert_eq!(store.group(g, carol).await.unwrap().seq, ROUNDS as u64 + 2);
}
