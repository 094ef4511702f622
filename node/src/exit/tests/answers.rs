//! Conversations on the manual clock: a leak that can be answered records
//! its conversation; answers are checked, capped and sealed; a fetch
//! deletes what it acknowledges; a follow-up to an ended conversation or
//! to another recipient is refused; after the keeping time nothing is left.

use leak_protocol::{
    Outcome,
    answers::{AnswerTo, AnswerVia, InboxId, ThreadState, open_answer},
};

use super::*;
use crate::exit::answers::Taken;

/// A leak to `to` that carries `answer_to`.
fn answerable(t: &TestExit, id: u8, to: &str, answer_to: AnswerTo) -> Vec<u8> {
    let bytes = leak_to(
        &t.exit,
        t.node_id,
        t.clock.now_ms(),
        MessageId([id; 16]),
        "I still have the book you lent me. I'm sorry.",
        0,
        to,
    );
    let mut leak = Leak::decode(&bytes).unwrap();
    leak.answer_to = Some(answer_to);
    leak.encode().unwrap()
}

fn outcome_of(t: &TestExit, id: u8) -> Option<Outcome> {
    match t.exit.locate(&MessageId([id; 16])).unwrap().1 {
        Known::Done(done) => Some(done.outcome),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_takes_answers_for_its_sender_until_its_time_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestExit::start(
        dir.path(),
        [41; 32],
        |c| c.exit.answers_per_day = 2,
        Arc::new(Vec::new),
    )
    .await;
    let (secret, capability) = ([3u8; 32], [4u8; 32]);
    let answer_to = AnswerTo {
        key: leak_protocol::crypto::x25519_public(&secret),
        inbox: InboxId::from_capability(&capability),
    };
    let key = t.exit.threads.thread_key(&answer_to.inbox);
    t.deliver(answerable(&t, 1, "alice@leak.test", answer_to))
        .await;
    until("the leak accepted", || t.intake("accepted") == 1).await;
    let thread = t
        .exit
        .threads
        .store
        .thread(&key)
        .unwrap()
        .expect("recorded");
    let alice = t
        .exit
        .policy()
        .recipient_hash(&Recipient::parse("alice@leak.test").unwrap());
    assert_eq!(thread.recipient, alice);
    assert_eq!(thread.message_ids.len(), 1);

    // The links and the Reply-To address of its email name it.
    let leak = Leak::decode(&answerable(&t, 1, "alice@leak.test", answer_to)).unwrap();
    let links = t.exit.thread_links(&leak, &alice).unwrap().unwrap();
    let token = links.answer_url.rsplit('/').next().unwrap();
    assert_eq!(
        t.exit
            .threads
            .check(crate::exit::answers::ThreadLink::Answer, token),
        Some((key, alice))
    );
    // No inbound mail here: the page is the only way, no Reply-To.
    assert_eq!(links.reply_to, None);
    let local = t.exit.threads.address_local(&key);
    assert_eq!(t.exit.threads.check_address(&local), Some(key));

    // Answers: the policy's refusal, another recipient's token, the day's
    // cap, all counted; two stored, sealed to the sender's key.
    let take = |text: &str, who: &[u8; 32]| {
        t.exit
            .take_answer(&key, &[*who], text, AnswerVia::Web, 0)
            .unwrap()
    };
    assert!(matches!(take("I will kill you", &alice), Taken::Refused(_)));
    assert_eq!(take("Thank you. Keep it.", &[9; 32]), Taken::NotRecipient);
    assert!(matches!(take(&"x".repeat(2001), &alice), Taken::Invalid(_)));
    assert_eq!(take("Thank you. Keep it.", &alice), Taken::Stored);
    assert_eq!(
        t.exit
            .take_answer(&key, &[[8; 32], alice], "Who is this?", AnswerVia::Email, 2)
            .unwrap(),
        Taken::Stored
    );
    assert_eq!(take("One more thing.", &alice), Taken::Flood);
    let now = t.clock.now_ms();
    let inbox = answer_to.inbox;
    let (state, first, waiting) = t.exit.threads.store.fetch(&key, &inbox, 0, now).unwrap();
    assert_eq!((state, waiting), (ThreadState::Open, 1));
    let first = first.unwrap();
    let opened = open_answer(&secret, &first.sealed).unwrap();
    assert_eq!(opened.text, "Thank you. Keep it.");
    // A wrong capability opens nothing.
    let (state, none, _) = t
        .exit
        .threads
        .store
        .fetch(&key, &InboxId::from_capability(&[5; 32]), 0, now)
        .unwrap();
    assert_eq!((state, none), (ThreadState::Unknown, None));

    // A fetch through the intake: answered along its reply block, and the
    // acknowledged answer deleted.
    let receipts = t.receipts();
    let hop = PathHop {
        node: NodeId([9; 32]),
        key: MixSecret::generate(&mut rand::rng()).public(),
        key_hint: 0,
        delay: Delay(0),
    };
    let (block, _) = build_reply_block(
        &[hop],
        MailboxId::from_capability(&[5; 32]),
        &mut rand::rng(),
    )
    .unwrap();
    let fetch = leak_protocol::answers::Fetch {
        capability,
        ack: first.seq,
        reply_block: block,
    };
    t.deliver(fetch.encode().unwrap()).await;
    until("the fetch answered", || t.receipts() == receipts + 1).await;
    assert_eq!(t.exit.threads.store.answers_kept().unwrap(), 1);
    assert_eq!(Metrics::get(&t.metrics.exit_fetches, "result", "answer"), 1);
    t.deliver(vec![1, 5, 0, 1]).await;
    until("a broken fetch counted", || {
        Metrics::get(&t.metrics.exit_fetches, "result", "invalid") == 1
    })
    .await;

    // Another recipient cannot be pulled into the conversation; once the
    // recipient ends it, a follow-up is not delivered.
    t.deliver(answerable(&t, 2, "bob@leak.test", answer_to))
        .await;
    until("the mismatch refused", || outcome_of(&t, 2).is_some()).await;
    assert!(
        matches!(outcome_of(&t, 2), Some(Outcome::Refused { rule, .. }) if rule == "thread.mismatch")
    );
    assert!(t.exit.end_thread(&key, &alice).unwrap());
    assert!(!t.exit.end_thread(&key, &[9; 32]).unwrap());
    t.deliver(answerable(&t, 3, "alice@leak.test", answer_to))
        .await;
    until("the follow-up refused", || outcome_of(&t, 3).is_some()).await;
    assert_eq!(outcome_of(&t, 3), Some(Outcome::ThreadEnded));
    assert_eq!(take("Actually, one more thing.", &alice), Taken::Ended);

    // Past the keeping time the answer is gone; the recipient's "end"
    // stays (a year), so a late follow-up cannot revive the conversation.
    t.clock.advance_ms(31 * DAY_MS);
    let now = t.clock.now_ms();
    assert_eq!(t.exit.threads.store.prune(now).unwrap(), 1);
    assert_eq!(t.exit.threads.store.answers_kept().unwrap(), 0);
    assert!(
        t.exit
            .threads
            .store
            .thread(&key)
            .unwrap()
            .is_some_and(|t| t.ended)
    );
    t.clock.advance_ms(335 * DAY_MS);
    t.exit.threads.store.prune(t.clock.now_ms()).unwrap();
    assert!(t.exit.threads.store.thread(&key).unwrap().is_none());
    let now = t.clock.now_ms();
    let (state, none, _) = t.exit.threads.store.fetch(&key, &inbox, 0, now).unwrap();
    assert_eq!((state, none), (ThreadState::Unknown, None));
    // A conversation the exit forgot and records again numbers its
    // answers above every earlier one: the sender's old acknowledgement
    // deletes none of the new ones.
    t.deliver(answerable(&t, 4, "alice@leak.test", answer_to))
        .await;
    until("recorded again", || {
        t.exit.threads.store.thread(&key).unwrap().is_some()
    })
    .await;
    assert!(t.exit.threads.store.thread(&key).unwrap().unwrap().next_seq > first.seq + 1);

    // A key for answers of low order (no shared secret) is refused.
    let weak = AnswerTo {
        key: [0; 32],
        inbox: InboxId::from_capability(&[6; 32]),
    };
    t.deliver(answerable(&t, 5, "alice@leak.test", weak)).await;
    until("the weak key refused", || outcome_of(&t, 5).is_some()).await;
    assert!(
        matches!(outcome_of(&t, 5), Some(Outcome::Refused { rule, .. }) if rule == "answer_to.invalid")
    );
    t.stop();
}
