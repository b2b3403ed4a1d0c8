//! The history archive format: round trip, truncation, tampering, size limit, import.

#![allow(clippy::unwrap_used)]

use rand::SeedableRng as _;

use super::*;
use crate::store::MemoryStore;
use crate::types::{MessageDirection, MessageId, MessageKind, MessageStatus};

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(7)
}

fn account() -> Uuid {
    Uuid::from_bytes([9; 16])
}

fn message(peer: Uuid, n: u64, body: &str) -> MessageRow {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    MessageRow {
        id: MessageId(id),
        conversation: ConversationId::Direct(peer),
        sender: if n.is_multiple_of(2) { peer } else { account() },
        sender_device: 1,
        direction: if n.is_multiple_of(2) { MessageDirection::Incoming } else { MessageDirection::Outgoing },
        body: body.to_owned(),
        sent_at: 1000 + n,
        received_at: 2000 + n,
        lamport: n,
        group_seq: 0,
        kind: MessageKind::Text,
        status: if n.is_multiple_of(2) { MessageStatus::Received } else { MessageStatus::Delivered },
        local_seq: 0,
    }
}

/// An archive with one contact and `n` messages of `body_len` bytes each.
fn archive(n: u64, body_len: usize) -> HistoryArchive {
    let peer = Uuid::from_bytes([2; 16]);
    HistoryArchive {
        version: ARCHIVE_FORMAT_VERSION,
        account: account(),
        created_at: 5,
        contacts: vec![ArchivedContact {
            account_id: peer,
            username: "bob".into(),
            trust: TrustState::Trusted,
            identity_key: Some(vec![5; 33]),
        }],
        groups: vec![],
        conversations: vec![ArchivedConversation {
            id: ConversationId::Direct(peer),
            clock: n,
            messages: (1..=n).map(|i| message(peer, i, &"x".repeat(body_len))).collect(),
        }],
    }
}

fn read(key: &ArchiveKey, chunks: &[Vec<u8>]) -> Result<HistoryArchive, ArchiveError> {
    let mut reader = ArchiveReader::new(key.clone(), &chunks[0])?;
    for c in &chunks[1..] {
        reader.push(c)?;
    }
    reader.finish()
}

#[test]
fn an_archive_round_trips_over_several_chunks() {
    let key = ArchiveKey::generate(&mut rng());
    let a = archive(40, 100);
    let chunks = seal(&a, &key, 512, &mut rng()).unwrap();
    assert!(chunks.len() > 3, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= 512 + ARCHIVE_CHUNK_OVERHEAD));
    let reader = ArchiveReader::new(key.clone(), &chunks[0]).unwrap();
    assert_eq!(reader.chunks() as usize, chunks.len());
    assert_eq!(read(&key, &chunks).unwrap(), a);
}

#[test]
fn a_small_archive_is_one_chunk() {
    let key = ArchiveKey::generate(&mut rng());
    let a = archive(1, 5);
    let chunks = seal(&a, &key, MAX_ARCHIVE_CHUNK_PLAINTEXT, &mut rng()).unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(read(&key, &chunks).unwrap(), a);
}

#[test]
fn a_missing_last_chunk_is_detected() {
    let key = ArchiveKey::generate(&mut rng());
    let chunks = seal(&archive(40, 100), &key, 512, &mut rng()).unwrap();
    let cut = &chunks[..chunks.len() - 1];
    assert!(matches!(read(&key, cut), Err(ArchiveError::Truncated(_))));
}

#[test]
fn a_tampered_or_swapped_chunk_is_detected() {
    let key = ArchiveKey::generate(&mut rng());
    let mut chunks = seal(&archive(40, 100), &key, 512, &mut rng()).unwrap();
    let mut tampered = chunks.clone();
    tampered[2][20] ^= 1;
    assert!(matches!(read(&key, &tampered), Err(ArchiveError::BadChunk(2))));
    chunks.swap(1, 2);
    assert!(matches!(read(&key, &chunks), Err(ArchiveError::BadChunk(1))));
    let other = ArchiveKey::generate(&mut rand::rngs::StdRng::seed_from_u64(8));
    assert!(matches!(ArchiveReader::new(other, &chunks[0]), Err(ArchiveError::BadChunk(0))));
}

#[test]
fn an_extra_chunk_is_refused() {
    let key = ArchiveKey::generate(&mut rng());
    let mut chunks = seal(&archive(40, 100), &key, 512, &mut rng()).unwrap();
    let n = chunks.len() as u32;
    chunks.push(key.seal_chunk(n, b"more", &mut rng()).unwrap());
    assert!(matches!(read(&key, &chunks), Err(ArchiveError::Truncated(_))));
}

#[test]
fn the_oldest_messages_are_dropped_until_the_archive_fits() {
    let key = ArchiveKey::generate(&mut rng());
    let a = archive(100, 200);
    let (chunks, kept) = seal_within(a.clone(), &key, 4096, 8 * 1024, &mut rng()).unwrap();
    let bytes: usize = chunks.iter().map(Vec::len).sum();
    assert!(bytes <= 8 * 1024, "{bytes} bytes");
    assert!(kept > 0 && kept < 100, "kept {kept}");
    let read_back = read(&key, &chunks).unwrap();
    let msgs = &read_back.conversations[0].messages;
    assert_eq!(msgs.len(), kept);
    assert_eq!(msgs.last(), a.conversations[0].messages.last(), "the newest are kept");
    assert!(matches!(seal_within(a, &key, 4096, 100, &mut rng()), Err(ArchiveError::TooLarge { .. })));
}

#[test]
fn another_accounts_archive_is_not_imported() {
    let mut a = archive(3, 5);
    a.account = Uuid::from_bytes([1; 16]);
    assert!(import_batch(&a, account(), &mut rng()).is_err());
}

#[tokio::test]
async fn an_archive_built_from_a_store_imports_into_another_in_the_same_order() {
    let primary = MemoryStore::new();
    let a = archive(20, 10);
    let mut batch = import_batch(&a, account(), &mut rng()).unwrap();
    let group = Uuid::from_bytes([4; 16]);
    let mut g = GroupRow::placeholder(group, GroupState::Active, None, Uuid::from_bytes([6; 16]));
    g.key_epoch = Some(3);
    batch.groups.insert(group, Some(g));
    primary.commit(batch).await.unwrap();

    let built = build(&primary, account(), 5, 9).await.unwrap();
    assert_eq!(built.contacts, a.contacts);
    assert_eq!(built.groups.len(), 1);
    assert_eq!(built.message_count(), 5);
    let peer = ConversationId::Direct(Uuid::from_bytes([2; 16]));

    let new = MemoryStore::new();
    new.commit(import_batch(&built, account(), &mut rng()).unwrap()).await.unwrap();
    let bodies = |rows: Vec<MessageRow>| rows.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(bodies(new.messages(peer, 50).await.unwrap()), bodies(primary.messages(peer, 5).await.unwrap()));
    assert_eq!(new.clock(peer).await.unwrap(), 20);
    assert_eq!(new.identity(&hush_keys::aci_string(Uuid::from_bytes([2; 16]))).await.unwrap(), Some(vec![5; 33]));
    let imported = new.group(group).await.unwrap().unwrap();
    assert_eq!(imported.key_epoch, None, "no sender key is carried over");
    assert_ne!(imported.distribution_id, Uuid::from_bytes([6; 16]));
    assert!(imported.distributed.is_empty());
}

#[tokio::test]
async fn messages_imported_from_an_archive_are_found_by_search() {
    let peer = Uuid::from_bytes([2; 16]);
    let mut a = archive(3, 4);
    a.conversations[0].messages[1].body = "明天见 at the 🎉 party".into();
    let store = crate::store::SqliteStore::in_memory().await.unwrap();
    store.commit(import_batch(&a, account(), &mut rng()).unwrap()).await.unwrap();
    for text in ["明天见", "🎉", "PARTY"] {
        let query = crate::store::SearchQuery { text: text.into(), conversation: None, exclude: vec![], limit: 5 };
        let hits = store.search(&query).await.unwrap();
        assert_eq!(hits.len(), 1, "{text}");
        assert_eq!((hits[0].message.conversation, hits[0].newer), (ConversationId::Direct(peer), 1));
    }
}

#[test]
fn the_archive_payload_has_a_stable_json_form() {
    insta::assert_json_snapshot!(archive(2, 3));
}
