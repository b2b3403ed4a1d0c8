//! The conformance suite every [`super::ClientStore`] passes:
//! `store_conformance_tests!(async { make_store() })` expands to one `#[tokio::test]` per check.

#[macro_export]
#[doc(hidden)]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        mod conformance {
            #![allow(clippy::unwrap_used)]
            use $crate::store::*;
            use $crate::{
                ConversationId, GroupRole, GroupState, MessageDirection, MessageId, MessageKind, MessageStatus,
                TrustState,
            };

            async fn store() -> impl ClientStore {
                $make.await
            }

            fn uuid(n: u8) -> uuid::Uuid {
                uuid::Uuid::from_bytes([n; 16])
            }

            fn message(id: u8, peer: u8, lamport: u64, sender_device: u32) -> MessageRow {
                MessageRow {
                    id: MessageId([id; 16]),
                    conversation: ConversationId::Direct(uuid(peer)),
                    sender: uuid(peer),
                    sender_device,
                    direction: MessageDirection::Incoming,
                    body: format!("body {id}"),
                    sent_at: 1,
                    received_at: 2,
                    lamport,
                    group_seq: 0,
                    kind: MessageKind::Text,
                    status: MessageStatus::Received,
                    local_seq: 0,
                }
            }

            #[tokio::test]
            async fn empty_store_has_nothing() {
                let s = store().await;
                assert!(s.account().await.unwrap().is_none());
                assert!(s.session(&("a".into(), 1)).await.unwrap().is_none());
                assert!(s.identity("a").await.unwrap().is_none());
                assert!(s.pre_key(1).await.unwrap().is_none());
                assert!(s.outbox_head().await.unwrap().is_none());
                assert_eq!(s.outbox_counts().await.unwrap(), (0, 0));
                assert_eq!(s.clock(ConversationId::Direct(uuid(1))).await.unwrap(), 0);
                assert!(s.contacts().await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn signal_records_round_trip_and_delete() {
                let s = store().await;
                let mut b = Batch::default();
                b.sessions.insert(("acct".into(), 2), Some(vec![1, 2]));
                b.sessions.insert(("acct".into(), 3), Some(vec![3]));
                b.identities.insert("acct".into(), vec![5; 33]);
                b.pre_keys.insert(7, Some(vec![7]));
                b.signed_pre_keys.insert(8, Some(vec![8]));
                b.kyber_pre_keys.insert(9, Some(KyberRow { record: vec![9], last_resort: true }));
                b.kyber_used.push((9, 8, vec![1; 33]));
                b.sender_keys.insert((("acct".into(), 2), uuid(4)), Some(vec![4]));
                s.commit(b).await.unwrap();
                assert_eq!(s.session(&("acct".into(), 2)).await.unwrap(), Some(vec![1, 2]));
                assert_eq!(s.session_devices("acct").await.unwrap(), vec![2, 3]);
                assert_eq!(s.identity("acct").await.unwrap(), Some(vec![5; 33]));
                assert_eq!(s.pre_key(7).await.unwrap(), Some(vec![7]));
                assert_eq!(s.signed_pre_key(8).await.unwrap(), Some(vec![8]));
                assert_eq!(s.kyber_pre_key(9).await.unwrap(), Some(KyberRow { record: vec![9], last_resort: true }));
                assert!(s.kyber_used(9, 8, &[1; 33]).await.unwrap());
                assert!(!s.kyber_used(9, 8, &[2; 33]).await.unwrap());
                assert_eq!(s.sender_key(&("acct".into(), 2), uuid(4)).await.unwrap(), Some(vec![4]));

                let mut b = Batch::default();
                b.sessions.insert(("acct".into(), 2), None);
                b.pre_keys.insert(7, None);
                b.kyber_pre_keys.insert(9, None);
                b.signed_pre_keys.insert(8, None);
                s.commit(b).await.unwrap();
                assert!(s.signed_pre_key(8).await.unwrap().is_none());
                assert_eq!(s.session_devices("acct").await.unwrap(), vec![3]);
                assert!(s.pre_key(7).await.unwrap().is_none());
                assert!(s.kyber_pre_key(9).await.unwrap().is_none());
            }

            #[tokio::test]
            async fn a_message_id_is_stored_once_and_status_only_moves_forward() {
                let s = store().await;
                let mut b = Batch::default();
                let mut m = message(1, 1, 5, 1);
                m.direction = MessageDirection::Outgoing;
                m.status = MessageStatus::Pending;
                b.messages.push(m.clone());
                s.commit(b).await.unwrap();
                let mut again = Batch::default();
                let mut other = m.clone();
                other.body = "different".into();
                again.messages.push(other);
                again.message_status.push((m.id, MessageStatus::Delivered));
                s.commit(again).await.unwrap();
                let stored = s.message(m.id).await.unwrap().unwrap();
                assert_eq!(stored.body, m.body);
                assert_eq!(stored.status, MessageStatus::Delivered);
                let mut back = Batch::default();
                back.message_status.push((m.id, MessageStatus::Sent));
                s.commit(back).await.unwrap();
                assert_eq!(s.message(m.id).await.unwrap().unwrap().status, MessageStatus::Delivered);
            }

            #[tokio::test]
            async fn history_is_in_display_order_and_limited_to_the_latest() {
                let s = store().await;
                let mut b = Batch::default();
                b.messages.push(message(3, 1, 2, 1));
                b.messages.push(message(1, 1, 3, 1));
                b.messages.push(message(2, 1, 1, 1));
                b.messages.push(message(4, 1, 2, 2));
                b.messages.push(message(5, 2, 1, 1));
                s.commit(b).await.unwrap();
                let ids: Vec<u8> =
                    s.messages(ConversationId::Direct(uuid(1)), 10).await.unwrap().iter().map(|m| m.id.0[0]).collect();
                assert_eq!(ids, vec![2, 3, 4, 1]);
                let last: Vec<u8> =
                    s.messages(ConversationId::Direct(uuid(1)), 2).await.unwrap().iter().map(|m| m.id.0[0]).collect();
                assert_eq!(last, vec![4, 1]);
            }

            #[tokio::test]
            async fn local_seq_numbers_messages_in_insertion_order() {
                let s = store().await;
                let mut b = Batch::default();
                b.messages.push(message(3, 1, 9, 1));
                b.messages.push(message(1, 2, 1, 1));
                s.commit(b).await.unwrap();
                let mut b = Batch::default();
                b.messages.push(message(3, 1, 9, 1)); // a duplicate keeps its number
                b.messages.push(message(2, 1, 1, 1));
                s.commit(b).await.unwrap();
                let all = s.messages_after(0, 10).await.unwrap();
                let order: Vec<(u8, u64)> = all.iter().map(|m| (m.id.0[0], m.local_seq)).collect();
                assert_eq!(order, vec![(3, 1), (1, 2), (2, 3)]);
                let rest: Vec<u8> = s.messages_after(1, 1).await.unwrap().iter().map(|m| m.id.0[0]).collect();
                assert_eq!(rest, vec![1]);
            }

            #[tokio::test]
            async fn outbox_is_fifo_and_failed_entries_are_skipped() {
                let s = store().await;
                let mut b = Batch::default();
                for n in 1..=3u8 {
                    b.outbox_add.push(NewOutbox {
                        message_id: MessageId([n; 16]),
                        conversation: ConversationId::Direct(uuid(9)),
                        kind: OutboxKind::Text,
                        content: vec![n],
                    });
                }
                s.commit(b).await.unwrap();
                let head = s.outbox_head().await.unwrap().unwrap();
                assert_eq!(head.message_id, MessageId([1; 16]));
                let mut failed = head.clone();
                failed.failed = Some("no".into());
                failed.attempts = 3;
                let mut b = Batch::default();
                b.outbox_update.push(failed);
                s.commit(b).await.unwrap();
                let next = s.outbox_head().await.unwrap().unwrap();
                assert_eq!(next.message_id, MessageId([2; 16]));
                assert!(next.seq > head.seq);
                assert_eq!(s.outbox_counts().await.unwrap(), (2, 1));
                let pending: Vec<u64> = s.outbox_pending(10).await.unwrap().iter().map(|o| o.seq).collect();
                assert_eq!(pending.len(), 2);
                assert_eq!(pending[0], next.seq);
                assert_eq!(s.outbox_pending(1).await.unwrap().len(), 1);
                let by_id = s.outbox_by_message(MessageId([1; 16])).await.unwrap().unwrap();
                assert_eq!((by_id.attempts, by_id.failed.as_deref()), (3, Some("no")));
                let all: Vec<(u64, bool)> =
                    s.outbox_all(10).await.unwrap().iter().map(|o| (o.seq, o.failed.is_some())).collect();
                assert_eq!(all, vec![(head.seq, true), (next.seq, false), (next.seq + 1, false)]);
                let mut delayed = next.clone();
                delayed.last_error = Some("mailbox full".into());
                let mut b = Batch::default();
                b.outbox_update.push(delayed);
                s.commit(b).await.unwrap();
                let head_now = s.outbox_head().await.unwrap().unwrap();
                assert_eq!(head_now.last_error.as_deref(), Some("mailbox full"));
                let mut b = Batch::default();
                b.outbox_remove.push(next.seq);
                s.commit(b).await.unwrap();
                assert_eq!(s.outbox_head().await.unwrap().unwrap().message_id, MessageId([3; 16]));
            }

            #[tokio::test]
            async fn clocks_only_grow_and_envelopes_are_remembered() {
                let s = store().await;
                let mut b = Batch::default();
                b.clocks.push((ConversationId::Direct(uuid(1)), 5));
                b.processed_envelopes.push(42);
                s.commit(b).await.unwrap();
                let mut b = Batch::default();
                b.clocks.push((ConversationId::Direct(uuid(1)), 3));
                s.commit(b).await.unwrap();
                assert_eq!(s.clock(ConversationId::Direct(uuid(1))).await.unwrap(), 5);
                assert!(s.envelope_processed(42).await.unwrap());
                assert!(!s.envelope_processed(43).await.unwrap());
                // Only a window below the newest is remembered.
                let newest = 42 + PROCESSED_ENVELOPE_WINDOW;
                let mut b = Batch::default();
                b.processed_envelopes.extend([newest, 43]);
                s.commit(b).await.unwrap();
                assert!(!s.envelope_processed(42).await.unwrap());
                assert!(s.envelope_processed(43).await.unwrap());
                assert!(s.envelope_processed(newest).await.unwrap());
            }

            #[tokio::test]
            async fn processed_group_seqs_are_remembered_per_group_within_the_window() {
                let s = store().await;
                let mut b = Batch::default();
                b.processed_group_seqs.extend([(uuid(1), 5), (uuid(1), 6), (uuid(2), 5), (uuid(1), 5)]);
                s.commit(b).await.unwrap();
                assert!(s.group_seq_processed(uuid(1), 5).await.unwrap());
                assert!(s.group_seq_processed(uuid(2), 5).await.unwrap());
                assert!(!s.group_seq_processed(uuid(1), 7).await.unwrap());
                assert!(!s.group_seq_processed(uuid(3), 5).await.unwrap());
                assert!(!s.envelope_processed(5).await.unwrap(), "a group seq is not a mailbox seq");
                // A newer seq of group 1 pushes its oldest out of the window; group 2 keeps its own.
                let newest = 6 + PROCESSED_GROUP_SEQ_WINDOW;
                let mut b = Batch::default();
                b.processed_group_seqs.push((uuid(1), newest));
                s.commit(b).await.unwrap();
                assert!(!s.group_seq_processed(uuid(1), 5).await.unwrap());
                assert!(!s.group_seq_processed(uuid(1), 6).await.unwrap());
                assert!(s.group_seq_processed(uuid(1), newest).await.unwrap());
                assert!(s.group_seq_processed(uuid(2), 5).await.unwrap());
                // One older than the newest but inside the window is still recorded.
                let mut b = Batch::default();
                b.processed_group_seqs.push((uuid(1), 7));
                s.commit(b).await.unwrap();
                assert!(s.group_seq_processed(uuid(1), 7).await.unwrap());
            }

            #[tokio::test]
            async fn contacts_values_and_account() {
                let s = store().await;
                let mut b = Batch::default();
                b.contacts.push(ContactRow { account_id: uuid(2), username: "bob".into(), trust: TrustState::Trusted });
                b.contacts.push(ContactRow { account_id: uuid(1), username: "al".into(), trust: TrustState::Changed });
                b.values.insert("cert".into(), Some(vec![1]));
                b.account = Some(LocalAccount {
                    username: "me".into(),
                    account_id: uuid(3),
                    device_id: 1,
                    registration_id: 5,
                    identity_key_pair: vec![1],
                    auth_key: vec![2],
                    trust_root: vec![3],
                    server_url: "http://x".into(),
                    next_prekey_id: 10,
                    next_kyber_id: 20,
                });
                s.commit(b).await.unwrap();
                assert_eq!(s.contact_by_username("bob").await.unwrap().unwrap().account_id, uuid(2));
                assert_eq!(s.contact(uuid(1)).await.unwrap().unwrap().trust, TrustState::Changed);
                let names: Vec<String> = s.contacts().await.unwrap().into_iter().map(|c| c.username).collect();
                assert_eq!(names, vec!["al".to_owned(), "bob".to_owned()]);
                assert_eq!(s.value("cert").await.unwrap(), Some(vec![1]));
                assert_eq!(s.account().await.unwrap().unwrap().next_kyber_id, 20);
                let mut b = Batch::default();
                b.values.insert("cert".into(), None);
                s.commit(b).await.unwrap();
                assert!(s.value("cert").await.unwrap().is_none());
            }

            fn logged(n: u64) -> SentLogRow {
                SentLogRow {
                    address: ("acct".into(), 2),
                    timestamp: n,
                    peer: uuid(2),
                    message_id: MessageId([n as u8; 16]),
                    content: vec![n as u8; 3],
                    sent_at: 10 + n % 1000,
                }
            }

            #[tokio::test]
            async fn the_resend_log_finds_removes_and_keeps_only_the_newest() {
                let s = store().await;
                let mut b = Batch::default();
                b.sent_log.push(logged(1));
                b.sent_log.push(logged(u64::MAX >> 1));
                s.commit(b).await.unwrap();
                let address: Address = ("acct".into(), 2);
                assert_eq!(s.sent_log(&address, 1).await.unwrap(), Some(logged(1)));
                assert_eq!(s.sent_log(&address, u64::MAX >> 1).await.unwrap(), Some(logged(u64::MAX >> 1)));
                assert!(s.sent_log(&("acct".into(), 3), 1).await.unwrap().is_none(), "another device");
                let mut b = Batch::default();
                b.sent_log_remove.push((address.clone(), 1));
                s.commit(b).await.unwrap();
                assert!(s.sent_log(&address, 1).await.unwrap().is_none());

                let mut b = Batch::default();
                for n in 100..(100 + SENT_LOG_CAPACITY as u64 + 5) {
                    b.sent_log.push(logged(n));
                }
                s.commit(b).await.unwrap();
                assert!(s.sent_log(&address, 104).await.unwrap().is_none(), "the oldest are dropped");
                assert!(s.sent_log(&address, 105).await.unwrap().is_some());
                assert!(s.sent_log(&address, 100 + SENT_LOG_CAPACITY as u64 + 4).await.unwrap().is_some());
            }

            fn group(n: u8) -> GroupRow {
                GroupRow {
                    id: uuid(n),
                    master_key: vec![n; 32],
                    title: "friends".into(),
                    description: String::new(),
                    title_blob: vec![1, 2],
                    description_blob: vec![],
                    members: vec![
                        MemberRow { account: uuid(1), role: GroupRole::Owner },
                        MemberRow { account: uuid(2), role: GroupRole::Member },
                    ],
                    members_can_add: false,
                    roster_version: 3,
                    epoch: 1,
                    state: GroupState::Active,
                    added_by: Some(uuid(1)),
                    declined: false,
                    distribution_id: uuid(40 + n),
                    key_epoch: Some(1),
                    distributed: [(uuid(2), 1), (uuid(2), 2)].into_iter().collect(),
                }
            }

            #[tokio::test]
            async fn groups_round_trip_and_delete() {
                let s = store().await;
                let mut b = Batch::default();
                b.groups.insert(uuid(7), Some(group(7)));
                b.groups.insert(uuid(5), Some(group(5)));
                s.commit(b).await.unwrap();
                assert_eq!(s.group(uuid(7)).await.unwrap(), Some(group(7)));
                let ids: Vec<_> = s.groups().await.unwrap().into_iter().map(|g| g.id).collect();
                assert_eq!(ids, vec![uuid(5), uuid(7)]);
                let mut b = Batch::default();
                let mut left = group(7);
                left.state = GroupState::Left;
                b.groups.insert(uuid(7), Some(left.clone()));
                b.groups.insert(uuid(5), None);
                s.commit(b).await.unwrap();
                assert_eq!(s.group(uuid(7)).await.unwrap(), Some(left));
                assert!(s.group(uuid(5)).await.unwrap().is_none());
            }

            #[tokio::test]
            async fn a_sender_key_can_be_deleted_for_rotation() {
                let s = store().await;
                let mut b = Batch::default();
                b.sender_keys.insert((("acct".into(), 1), uuid(4)), Some(vec![4]));
                b.sender_keys.insert((("acct".into(), 1), uuid(5)), Some(vec![5]));
                s.commit(b).await.unwrap();
                let mut b = Batch::default();
                b.sender_keys.insert((("acct".into(), 1), uuid(4)), None);
                s.commit(b).await.unwrap();
                assert!(s.sender_key(&("acct".into(), 1), uuid(4)).await.unwrap().is_none());
                assert_eq!(s.sender_key(&("acct".into(), 1), uuid(5)).await.unwrap(), Some(vec![5]));
            }

            #[tokio::test]
            async fn a_distribution_keeps_its_first_binding() {
                let s = store().await;
                let bind = |account: u8, device: u32| DistributionBinding {
                    group: uuid(1),
                    distribution: uuid(9),
                    account: uuid(account),
                    device,
                };
                let mut b = Batch::default();
                b.distributions.push(bind(2, 1));
                s.commit(b).await.unwrap();
                let mut b = Batch::default();
                b.distributions.push(bind(3, 1));
                s.commit(b).await.unwrap();
                assert_eq!(s.distribution(uuid(1), uuid(9)).await.unwrap(), Some((uuid(2), 1)));
                assert!(s.distribution(uuid(2), uuid(9)).await.unwrap().is_none(), "per group");
            }

            #[tokio::test]
            async fn held_messages_come_back_in_group_seq_order_until_removed() {
                let s = store().await;
                let held = |group: u8, seq: u64| HeldRow {
                    group: uuid(group),
                    group_seq: seq,
                    server_timestamp: 10 + seq,
                    content: vec![seq as u8; 4],
                };
                let mut b = Batch::default();
                b.held_add.extend([held(1, 9), held(1, 3), held(2, 1), held(1, 3)]);
                s.commit(b).await.unwrap();
                let seqs: Vec<u64> = s.held(uuid(1)).await.unwrap().iter().map(|h| h.group_seq).collect();
                assert_eq!(seqs, vec![3, 9]);
                assert_eq!(s.held(uuid(1)).await.unwrap()[0], held(1, 3));
                let mut b = Batch::default();
                b.held_remove.push((uuid(1), 3));
                s.commit(b).await.unwrap();
                let seqs: Vec<u64> = s.held(uuid(1)).await.unwrap().iter().map(|h| h.group_seq).collect();
                assert_eq!(seqs, vec![9]);
                assert_eq!(s.held(uuid(2)).await.unwrap().len(), 1);
            }

            #[tokio::test]
            async fn a_group_conversation_is_ordered_by_group_seq_with_unsent_last() {
                let s = store().await;
                let g = ConversationId::Group(uuid(1));
                let row = |id: u8, group_seq: u64| MessageRow {
                    conversation: g,
                    group_seq,
                    lamport: 0,
                    ..message(id, 2, 0, 1)
                };
                let mut b = Batch::default();
                b.messages.extend([row(1, 0), row(2, 7), row(3, 2), row(4, 0)]);
                b.messages.push(message(5, 1, 1, 1));
                s.commit(b).await.unwrap();
                let ids: Vec<u8> = s.messages(g, 10).await.unwrap().iter().map(|m| m.id.0[0]).collect();
                assert_eq!(ids, vec![3, 2, 1, 4]);
                let mut b = Batch::default();
                b.message_group_seq.push((MessageId([1; 16]), 9));
                b.messages.push(MessageRow { kind: MessageKind::System, ..row(6, 8) });
                s.commit(b).await.unwrap();
                let ids: Vec<u8> = s.messages(g, 10).await.unwrap().iter().map(|m| m.id.0[0]).collect();
                assert_eq!(ids, vec![3, 2, 6, 1, 4]);
                let last: Vec<u8> = s.messages(g, 2).await.unwrap().iter().map(|m| m.id.0[0]).collect();
                assert_eq!(last, vec![1, 4]);
                assert_eq!(s.message(MessageId([6; 16])).await.unwrap().unwrap().kind, MessageKind::System);
            }

            fn text(id: u8, conversation: ConversationId, sent_at: u64, body: &str) -> MessageRow {
                MessageRow { conversation, sent_at, lamport: sent_at, body: body.into(), ..message(id, 9, 0, 1) }
            }

            fn query(text: &str) -> SearchQuery {
                SearchQuery { text: text.into(), conversation: None, exclude: Vec::new(), limit: 50 }
            }

            async fn found(s: &impl ClientStore, q: SearchQuery) -> Vec<u8> {
                s.search(&q).await.unwrap().iter().map(|h| h.message.id.0[0]).collect()
            }

            #[tokio::test]
            async fn search_finds_english_emoji_and_cjk_text_ignoring_case() {
                let s = store().await;
                let bob = ConversationId::Direct(uuid(1));
                let group = ConversationId::Group(uuid(2));
                let mut b = Batch::default();
                b.messages.push(text(1, bob, 10, "Lunch at noon?"));
                b.messages.push(text(2, bob, 20, "🎉 party tonight"));
                b.messages.push(text(3, bob, 30, "明天见"));
                b.messages.push(text(4, group, 40, "明白了, see you"));
                b.messages.push(text(5, group, 50, "nothing to see"));
                s.commit(b).await.unwrap();

                let hits = s.search(&query("LUNCH")).await.unwrap();
                assert_eq!(hits.len(), 1);
                assert_eq!((hits[0].message.id.0[0], hits[0].matches.clone()), (1, vec![0..5]));
                assert_eq!(found(&s, query("party")).await, vec![2]);
                let hits = s.search(&query("🎉 party")).await.unwrap();
                assert_eq!(
                    hits.iter().map(|h| &h.message.body[h.matches[0].clone()]).collect::<Vec<_>>(),
                    ["🎉 party"]
                );
                assert_eq!(found(&s, query("明天见")).await, vec![3]);
                assert_eq!(found(&s, query("see you")).await, vec![4]);
                // Shorter than a trigram: one emoji, one or two CJK characters (newest first).
                assert_eq!(found(&s, query("🎉")).await, vec![2]);
                assert_eq!(found(&s, query("明")).await, vec![4, 3]);
                assert_eq!(found(&s, query("天见")).await, vec![3]);
                let hits = s.search(&query("明")).await.unwrap();
                assert_eq!(hits[1].matches, vec![0..3]);
                assert!(found(&s, query("dinner")).await.is_empty());
                assert!(found(&s, query("")).await.is_empty());
                assert!(found(&s, SearchQuery { limit: 0, ..query("party") }).await.is_empty());
            }

            #[tokio::test]
            async fn search_takes_the_query_literally() {
                let s = store().await;
                let bob = ConversationId::Direct(uuid(1));
                let mut b = Batch::default();
                b.messages.push(text(1, bob, 10, r#"he said "hi" OR NEAR(x* ok"#));
                b.messages.push(text(2, bob, 20, "100% sure_thing"));
                b.messages.push(text(3, bob, 30, r"back\slash"));
                b.messages.push(text(4, bob, 40, "plain words only"));
                s.commit(b).await.unwrap();
                for (q, want) in [
                    (r#""hi" OR NEAR(x*"#, vec![1]),
                    ("NEAR(", vec![1]),
                    ("x*", vec![1]),
                    ("\"", vec![1]),
                    ("\"\"", vec![]),
                    ("OR NEAR", vec![1]),
                    ("%", vec![2]),
                    ("0%", vec![2]),
                    ("_", vec![2]),
                    ("e_t", vec![2]),
                    (r"\", vec![3]),
                    (r"k\s", vec![3]),
                    ("AND", vec![]),
                    ("words NOT only", vec![]),
                    ("*", vec![1]),
                    ("^pl", vec![]),
                    ("body:", vec![]),
                    ("(", vec![1]),
                ] {
                    assert_eq!(found(&s, query(q)).await, want, "query {q:?}");
                }
            }

            #[tokio::test]
            async fn a_deleted_message_is_no_longer_found_and_its_position_is_not_reused() {
                let s = store().await;
                let bob = ConversationId::Direct(uuid(1));
                let mut b = Batch::default();
                b.messages.push(text(1, bob, 10, "find me one"));
                b.messages.push(text(2, bob, 20, "find me two"));
                b.messages.push(text(3, bob, 30, "find me 三"));
                s.commit(b).await.unwrap();
                assert_eq!(found(&s, query("find me")).await.len(), 3);
                let last = s.message(MessageId([3; 16])).await.unwrap().unwrap().local_seq;

                let mut b = Batch::default();
                b.messages_remove.push(MessageId([3; 16]));
                b.messages_remove.push(MessageId([1; 16]));
                s.commit(b).await.unwrap();
                assert_eq!(found(&s, query("find me")).await, vec![2]);
                assert!(found(&s, query("三")).await.is_empty());
                assert!(s.message(MessageId([3; 16])).await.unwrap().is_none());
                assert_eq!(s.messages(bob, 10).await.unwrap().len(), 1);

                let mut b = Batch::default();
                b.messages.push(text(4, bob, 40, "find me now"));
                s.commit(b).await.unwrap();
                let again = s.message(MessageId([4; 16])).await.unwrap().unwrap();
                assert!(again.local_seq > last, "a deleted message's position is not given out again");
                assert_eq!(found(&s, query("find me")).await, vec![4, 2]);
                assert_eq!(found(&s, query("now")).await, vec![4]);
            }

            #[tokio::test]
            async fn search_is_filtered_by_conversation_and_exclusions() {
                let s = store().await;
                let (bob, carol, group) =
                    (ConversationId::Direct(uuid(1)), ConversationId::Direct(uuid(2)), ConversationId::Group(uuid(3)));
                let mut b = Batch::default();
                b.messages.push(text(1, bob, 10, "the same words"));
                b.messages.push(text(2, carol, 20, "the same words"));
                b.messages.push(text(3, group, 30, "the same words"));
                b.messages.push(MessageRow { kind: MessageKind::System, ..text(4, group, 40, "the same words") });
                s.commit(b).await.unwrap();
                assert_eq!(found(&s, query("same")).await, vec![3, 2, 1], "system entries are not searched");
                assert_eq!(found(&s, SearchQuery { conversation: Some(carol), ..query("same") }).await, vec![2]);
                assert_eq!(found(&s, SearchQuery { conversation: Some(group), ..query("sa") }).await, vec![3]);
                assert_eq!(found(&s, SearchQuery { exclude: vec![group, bob], ..query("same") }).await, vec![2]);
                assert_eq!(found(&s, SearchQuery { exclude: vec![group], ..query("s") }).await, vec![2, 1]);
            }

            #[tokio::test]
            async fn search_ranks_more_and_denser_matches_first_then_newest_and_honours_the_limit() {
                let s = store().await;
                let bob = ConversationId::Direct(uuid(1));
                let mut b = Batch::default();
                b.messages.push(text(1, bob, 10, "we could get lunch after the long meeting if you like"));
                b.messages.push(text(2, bob, 20, "lunch? lunch!"));
                b.messages.push(text(3, bob, 30, "see you at lunch"));
                b.messages.push(text(4, bob, 40, "see you at lunch"));
                b.messages.push(text(5, bob, 50, "no food mentioned here"));
                s.commit(b).await.unwrap();
                assert_eq!(found(&s, query("lunch")).await, vec![2, 4, 3, 1]);
                assert_eq!(found(&s, SearchQuery { limit: 2, ..query("lunch") }).await, vec![2, 4]);
                let hits = s.search(&query("LUNCH")).await.unwrap();
                assert_eq!(hits[0].matches, vec![0..5, 7..12]);
                // Unranked below three characters: newest first.
                assert_eq!(found(&s, SearchQuery { limit: 3, ..query("lu") }).await, vec![4, 3, 2]);
            }

            #[tokio::test]
            async fn a_search_hit_says_how_many_messages_follow_it_in_its_conversation() {
                let s = store().await;
                let bob = ConversationId::Direct(uuid(1));
                let group = ConversationId::Group(uuid(2));
                let mut b = Batch::default();
                for n in 1..=5u8 {
                    let body = if n == 2 { "the needle".to_owned() } else { format!("hay {n}") };
                    b.messages.push(text(n, bob, u64::from(n), &body));
                }
                b.messages.push(MessageRow { group_seq: 1, ..text(10, group, 1, "group needle") });
                b.messages.push(MessageRow { group_seq: 2, ..text(11, group, 2, "after it") });
                b.messages.push(MessageRow { group_seq: 0, ..text(12, group, 3, "unsent, shown last") });
                s.commit(b).await.unwrap();
                let hits = s.search(&query("needle")).await.unwrap();
                let direct = hits.iter().find(|h| h.message.conversation == bob).unwrap();
                assert_eq!(direct.newer, 3);
                let page = s.messages(bob, usize::try_from(direct.newer).unwrap() + 1).await.unwrap();
                assert_eq!(page[0].id, direct.message.id);
                let in_group = hits.iter().find(|h| h.message.conversation == group).unwrap();
                assert_eq!(in_group.newer, 2);
                let page = s.messages(group, 3).await.unwrap();
                assert_eq!(page[0].id, in_group.message.id);
            }
        }
    };
}
