//! Local full-text search over what really arrived through hushd: English, emoji and CJK,
//! one-to-one and in a group; deleted messages are not found; the index survives a reopen.

use hush_client_core::{ClientError, MessageDirection, SearchHit, SearchOptions};

use crate::group_support::{join, sent, texts};
use crate::support::{Hushd, TestClient};

async fn search(who: &TestClient, query: &str) -> Vec<SearchHit> {
    who.client.search(query, SearchOptions::default()).await.unwrap()
}

fn bodies(hits: &[SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.message.body.as_str()).collect()
}

fn marked(hit: &SearchHit) -> Vec<&str> {
    hit.matches.iter().map(|r| &hit.message.body[r.clone()]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_arrived_are_found_in_english_emoji_and_cjk_and_a_deleted_one_is_not() {
    let server = Hushd::start().await;
    let alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    let texts = ["Lunch tomorrow at the usual place?", "🎉 party at mine tonight", "明天见", "see you at lunch"];
    for t in texts {
        alice.client.send_text(&bob.name, t).await.unwrap();
    }
    alice.drain().await;
    bob.drain().await;
    assert_eq!(bob.drain_bodies(), texts);

    let hits = search(&bob, "lunch").await;
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| marked(h).iter().all(|m| m.eq_ignore_ascii_case("lunch"))));
    assert!(hits.iter().all(|h| h.message.conversation == alice.name && h.message.from == alice.name));
    let hits = search(&bob, "🎉 party").await;
    assert_eq!((bodies(&hits), marked(&hits[0])), (vec![texts[1]], vec!["🎉 party"]));
    assert_eq!(bodies(&search(&bob, "🎉").await), vec![texts[1]], "one emoji: shorter than a trigram");
    let hits = search(&bob, "明天见").await;
    assert_eq!(bodies(&hits), vec!["明天见"]);
    assert_eq!(hits[0].matches, vec![0..9]);
    assert_eq!(bodies(&search(&bob, "天").await), vec!["明天见"], "one CJK character");
    // The hit says where it stands: the history page of `newer + 1` starts with it.
    let hit = &search(&bob, "party").await[0];
    assert_eq!(hit.newer, 2);
    let page = bob.client.history(&hit.message.conversation, usize::try_from(hit.newer).unwrap() + 1).await.unwrap();
    assert_eq!(page[0].id, hit.message.id);
    // The sender finds its own outgoing copies too.
    let mine = search(&alice, "明天见").await;
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].message.direction, mine[0].message.conversation.as_str()),
        (MessageDirection::Outgoing, bob.name.as_str())
    );

    // Deleted here: no longer found, nor in the history; the sender keeps its copy.
    let gone = search(&bob, "party").await[0].message.id;
    bob.client.delete_message(gone).await.unwrap();
    assert!(search(&bob, "party").await.is_empty());
    assert!(search(&bob, "🎉").await.is_empty());
    assert!(bob.client.history(&alice.name, 10).await.unwrap().iter().all(|m| m.id != gone));
    assert!(matches!(bob.client.delete_message(gone).await, Err(ClientError::NoSuchMessage(_))));
    assert_eq!(search(&alice, "party").await.len(), 1);
    // A message still in the outbox is refused until it is cancelled.
    let pending = alice.client.send_text(&bob.name, "not sent yet").await.unwrap();
    assert!(matches!(alice.client.delete_message(pending).await, Err(ClientError::Invalid(_))));
    alice.client.cancel(pending).await.unwrap();
    alice.client.delete_message(pending).await.unwrap();
    assert!(search(&alice, "not sent").await.is_empty());

    // What arrives later is indexed, and the index survives a reopen.
    alice.client.send_text(&bob.name, "another party, next week").await.unwrap();
    alice.drain().await;
    bob.reopen(&server).await;
    bob.drain().await;
    assert_eq!(bodies(&search(&bob, "PARTY").await), vec!["another party, next week"]);
    assert_eq!(search(&bob, "lunch").await.len(), 2);

    // Bad input is refused clearly; query syntax is taken literally.
    assert!(matches!(bob.client.search("  ", SearchOptions::default()).await, Err(ClientError::Invalid(_))));
    assert!(search(&bob, "\"lunch\" OR NEAR(party*").await.is_empty());
    let nobody = SearchOptions { conversation: Some("nobody_we_know".into()), ..SearchOptions::default() };
    assert!(matches!(bob.client.search("lunch", nobody).await, Err(ClientError::UnknownUser(_))));
    alice.client.shutdown().await.unwrap();
    bob.client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_are_found_and_a_search_can_be_kept_to_one_conversation() {
    let server = Hushd::start().await;
    let mut alice = TestClient::register(&server, "alice").await;
    let mut bob = TestClient::register(&server, "bob").await;
    alice.client.send_text(&bob.name, "the picnic is on saturday").await.unwrap();
    alice.drain().await;
    bob.drain().await;
    for c in [&alice, &bob] {
        c.client.connect().await.unwrap();
    }
    let group = alice.client.create_group("picnic", &[&bob.name]).await.unwrap().group;
    join(&mut bob, &group).await;
    let ids = [
        alice.client.send_text(&group, "picnic: bring 🍉 and 寿司").await.unwrap(),
        alice.client.send_text(&group, "the picnic starts at noon").await.unwrap(),
    ];
    sent(&mut alice, &ids).await;
    assert_eq!(texts(&mut bob, &group, 2).await.len(), 2);

    let all = search(&bob, "picnic").await;
    assert_eq!(all.len(), 3, "{:?}", bodies(&all));
    let in_group = SearchOptions { conversation: Some(group.clone()), ..SearchOptions::default() };
    let hits = bob.client.search("picnic", in_group.clone()).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.message.conversation == group && h.message.from == alice.name));
    assert_eq!(bodies(&bob.client.search("寿司", in_group.clone()).await.unwrap()), vec!["picnic: bring 🍉 and 寿司"]);
    assert_eq!(bob.client.search("🍉", in_group).await.unwrap().len(), 1);
    let direct = SearchOptions { conversation: Some(alice.name.clone()), ..SearchOptions::default() };
    assert_eq!(bodies(&bob.client.search("picnic", direct).await.unwrap()), vec!["the picnic is on saturday"]);
    let one = SearchOptions { limit: 1, ..SearchOptions::default() };
    assert_eq!(bob.client.search("picnic", one).await.unwrap().len(), 1);
    alice.client.shutdown().await.unwrap();
    bob.client.shutdown().await.unwrap();
}
