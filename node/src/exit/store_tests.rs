//! The exit's tables and spool, on a real database.

#![allow(clippy::unwrap_used)]
use super::*;

fn open(dir: &std::path::Path) -> ExitStore {
    let store = Arc::new(Store::open(&dir.join("node.redb")).unwrap());
    ExitStore::open(store, dir.join("exit-queue")).unwrap()
}

fn entry() -> Entry {
    Entry {
        accepted_ms: 1,
        next_attempt_ms: 2,
        attempts: 0,
        last_error: String::new(),
        reply_block: vec![7; 10],
    }
}

#[test]
fn accept_finish_and_scrub() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = MessageId([1; 16]);
    assert!(matches!(store.lookup(&id).unwrap(), Known::New));
    store
        .accept(&id, b"secret text", &entry(), &[3; 32], 10)
        .unwrap();
    assert!(matches!(store.lookup(&id).unwrap(), Known::Queued(_)));
    assert_eq!(store.body(&id).unwrap().unwrap().as_slice(), b"secret text");
    assert_eq!(store.rate_count(&[3; 32], 10).unwrap(), 1);
    let done = Done {
        outcome: Outcome::Delivered,
        state: EndState::Delivered,
        at_ms: 5,
    };
    assert_eq!(store.finish(&id, &done).unwrap(), Some(entry()));
    assert!(store.body(&id).unwrap().is_none());
    assert!(matches!(store.lookup(&id).unwrap(), Known::Done(d) if d == done));
    // A second finish finds nothing.
    assert_eq!(store.finish(&id, &done).unwrap(), None);
    store.prune(0, 6, 11).unwrap();
    assert!(matches!(store.lookup(&id).unwrap(), Known::New));
    assert_eq!(store.rate_count(&[3; 32], 10).unwrap(), 0);
}

#[test]
fn state_survives_reopening_and_orphans_are_scrubbed() {
    let dir = tempfile::tempdir().unwrap();
    let id = MessageId([2; 16]);
    {
        let store = open(dir.path());
        store.accept(&id, b"kept", &entry(), &[4; 32], 1).unwrap();
        use leak_protocol::policy::optout::OptOut;
        let out = OptOut::sign(&[5; 32], [9; 32], 2, true);
        assert_eq!(
            store.record_opt_outs(std::slice::from_ref(&out)).unwrap(),
            vec![out.clone()]
        );
        // The newest record for a recipient holds; an older or as old one
        // changes nothing.
        let older_in = OptOut::sign(&[6; 32], [9; 32], 1, false);
        let as_old_in = OptOut::sign(&[6; 32], [9; 32], 2, false);
        assert!(
            store
                .record_opt_outs(&[older_in, as_old_in])
                .unwrap()
                .is_empty()
        );
        assert!(store.opted_out(&[9; 32]).unwrap());
        let back_in = OptOut::sign_with_evidence(&[6; 32], [8; 32], 5, false, b"mail".to_vec());
        assert_eq!(
            store
                .record_opt_outs(std::slice::from_ref(&back_in))
                .unwrap()
                .len(),
            1
        );
        // Only records with evidence are passed on.
        assert_eq!(store.held_opt_outs().unwrap(), vec![back_in]);
    }
    // A leak file whose entry was never committed.
    let orphan = dir.path().join("exit-queue").join("orphan.leak");
    std::fs::write(&orphan, b"never acknowledged").unwrap();
    let store = open(dir.path());
    assert!(!orphan.exists());
    assert_eq!(store.queued().unwrap().len(), 1);
    assert_eq!(store.body(&id).unwrap().unwrap().as_slice(), b"kept");
    assert!(store.opted_out(&[9; 32]).unwrap());
    assert!(!store.opted_out(&[8; 32]).unwrap());
}

#[test]
fn update_with_keeps_what_it_does_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = MessageId([3; 16]);
    store.accept(&id, b"text", &entry(), &[1; 32], 1).unwrap();
    assert!(
        store
            .update_with(&id, |e| e.reply_block = vec![9; 4])
            .unwrap()
    );
    assert!(store.update_with(&id, |e| e.attempts = 2).unwrap());
    let Known::Queued(now) = store.lookup(&id).unwrap() else {
        panic!("queued");
    };
    assert_eq!((now.attempts, now.reply_block), (2, vec![9; 4]));
    assert!(
        !store
            .update_with(&MessageId([4; 16]), |e| e.attempts = 1)
            .unwrap()
    );
}

#[test]
fn earlier_opt_outs_are_taken_once_the_exits_own_only() {
    let dir = tempfile::tempdir().unwrap();
    let (me, other) = ([1; 32], [2; 32]);
    {
        let db = Store::open(&dir.path().join("node.redb")).unwrap();
        let txn = db.db().begin_write().unwrap();
        {
            let mut v1 = txn.open_table(earlier::OPT_OUT_V1).unwrap();
            v1.insert([10; 32], (7_000, me)).unwrap();
            v1.insert([11; 32], (8_000, other)).unwrap();
            let mut v2 = txn.open_table(earlier::OPT_OUT_V2).unwrap();
            // Format 2's layout: exit, recipient, time, out, signature.
            for (exit, recipient, out) in [(me, [12; 32], false), (other, [13; 32], true)] {
                let bytes =
                    postcard::to_allocvec(&(exit, recipient, 9u64, out, &[0u8; 64][..])).unwrap();
                v2.insert(recipient, bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    let mut taken = store.take_earlier_opt_outs(&me).unwrap();
    taken.sort();
    assert_eq!(taken, vec![([10; 32], 7, true), ([12; 32], 9, false)]);
    assert!(store.take_earlier_opt_outs(&me).unwrap().is_empty());
}

#[test]
fn a_bounce_for_an_unknown_user_suppresses_with_its_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sent = Done {
        outcome: Outcome::Accepted,
        state: EndState::Sent,
        at_ms: 1,
    };
    let bounced = Done {
        outcome: Outcome::BouncedWith(leak_protocol::BounceClass::UnknownUser),
        state: EndState::Bounced,
        at_ms: 2,
    };
    let wait = |id: MessageId, recipient: [u8; 32]| {
        store.accept(&id, b"text", &entry(), &[3; 32], 1).unwrap();
        let waiting = store
            .await_notification(
                &id,
                &MessageId([9; 16]),
                |e| Awaiting {
                    reply_block: e.reply_block,
                    provider: 0,
                    sent_ms: 1,
                    deadline_ms: 100,
                    recipient: Some(recipient),
                },
                &sent,
            )
            .unwrap();
        assert!(waiting);
    };
    // Without a suppression: resolved, the recipient still reachable.
    wait(MessageId([1; 16]), [5; 32]);
    let (_, sender) = store
        .resolve(&MessageId([1; 16]), &bounced, None)
        .unwrap()
        .unwrap();
    assert_eq!(sender, Some(MessageId([9; 16])));
    assert!(!store.suppressed(&[5; 32], 2).unwrap());
    // With one: suppressed by the time the resolution returns, until then.
    wait(MessageId([2; 16]), [6; 32]);
    assert!(
        store
            .resolve(&MessageId([2; 16]), &bounced, Some(50))
            .unwrap()
            .is_some()
    );
    assert!(store.suppressed(&[6; 32], 49).unwrap());
    assert!(!store.suppressed(&[6; 32], 50).unwrap());
    // A second resolution finds nothing and suppresses nothing.
    assert!(
        store
            .resolve(&MessageId([2; 16]), &bounced, Some(500))
            .unwrap()
            .is_none()
    );
    assert!(!store.suppressed(&[6; 32], 60).unwrap());
}
