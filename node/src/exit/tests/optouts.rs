//! Opt-out records from other exits: a holder keeps a record only from an
//! exit that holds the recipient's opt-out too, signed by such an exit,
//! newer than the one it holds, and at most the day's quota from one exit;
//! everything else is refused and counted, and changes nothing.

use leak_protocol::{
    federation::MAX_OPT_OUTS_PER_EXIT_PER_DAY,
    policy::optout::{self, OptOut},
};

use super::*;
use crate::exit::optout::RecordResult;

/// Five exits of the built-in policy: this one (seed 8) and four others
/// (seeds 1 to 4).
fn five_exits(now_ms: u64) -> Vec<leak_protocol::directory::Descriptor> {
    let version = policy::Policy::builtin().version();
    [[8u8; 32], [1; 32], [2; 32], [3; 32], [4; 32]]
        .iter()
        .map(|seed| {
            exit_descriptor(
                NodeId(leak_protocol::crypto::ed25519_public(seed)),
                version,
                now_ms,
            )
        })
        .collect()
}

fn id(seed: u8) -> NodeId {
    NodeId(leak_protocol::crypto::ed25519_public(&[seed; 32]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_records_with_evidence_are_kept_newest_first_within_the_quota() {
    use crate::exit::evidence::testing::{email, key, sign};
    let dir = tempfile::tempdir().unwrap();
    let now = crate::clock::unix_now_ms();
    let exits = five_exits(now);
    let listed = Arc::new(std::sync::Mutex::new(exits.clone()));
    let view = listed.clone();
    // Keys come from a resolver (nothing answers there: the one key the
    // test needs is put in the exit's cache).
    let t = TestExit::start(
        dir.path(),
        [8; 32],
        |c| c.exit.dns_resolver = "127.0.0.1:9".into(),
        Arc::new(move || view.lock().unwrap().clone()),
    )
    .await;
    let exit = t.exit.clone();
    // The recipients' provider: example.org, with key 1.
    exit.evidence.add_key("s1", "example.org", &key(1).1);
    let policy = policy::Policy::builtin();
    let version = policy.version();
    let holders = |h: &[u8; 32]| -> Vec<NodeId> {
        leak_protocol::directory::holders(&exits, h, version, t.clock.now_ms() / 1000)
            .into_iter()
            .map(|d| d.node)
            .collect()
    };
    let hash_of =
        |address: &str| policy.recipient_hash(&leak_protocol::Recipient::parse(address).unwrap());
    let me = id(8);
    // Recipients this exit holds with another exit `a`, and one it does
    // not hold at all; an exit that holds none of them.
    let addresses: Vec<String> = (0..4000).map(|i| format!("r{i}@example.org")).collect();
    let (a, shared): (u8, Vec<String>) = (1..=4)
        .map(|s| {
            let shared: Vec<String> = addresses
                .iter()
                .filter(|r| {
                    let hs = holders(&hash_of(r));
                    hs.contains(&me) && hs.contains(&id(s))
                })
                .cloned()
                .collect();
            (s, shared)
        })
        .max_by_key(|(_, v)| v.len())
        .unwrap();
    assert!(shared.len() > MAX_OPT_OUTS_PER_EXIT_PER_DAY as usize + 8);
    let not_mine = addresses
        .iter()
        .find(|r| !holders(&hash_of(r)).contains(&me))
        .unwrap();
    let outsider = (1..=4u8)
        .find(|s| !holders(&hash_of(&shared[1])).contains(&id(*s)))
        .unwrap();
    // The recipient's email saying `out`, signed by its provider now, as
    // the exit that received it cut it down.
    let mail = |address: &str, out: bool| {
        let action = if out { "unsubscribe" } else { "resubscribe" };
        let raw = sign(
            &email(address, &format!("{action} 00ff")),
            "example.org",
            1,
            &["From", "Subject"],
        );
        let exit = exit.clone();
        async move {
            exit.evidence
                .check(&raw, crate::clock::unix_now_ms() / 1000)
                .await
                .unwrap()
        }
    };
    // The record exit `seed` makes of it.
    let record = |seed: u8, address: &str, v: &super::super::evidence::Verified| {
        OptOut::sign_with_evidence(
            &[seed; 32],
            hash_of(address),
            v.at,
            v.out,
            v.evidence.clone(),
        )
    };
    let take = |from: NodeId, records: Vec<OptOut>| {
        let exit = exit.clone();
        async move {
            exit.take_opt_outs(from, &optout::encode_batch(&records).unwrap())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let count =
        |label: &'static str| Metrics::get(&t.metrics.exit_opt_out_records, "result", label);
    let out_of = |address: &str| exit.store.opted_out(&hash_of(address)).unwrap();

    // A holder's opt-out with its evidence: kept; the same again: not newer.
    let dan = mail(&shared[0], true).await;
    let out = record(a, &shared[0], &dan);
    assert_eq!(
        take(id(a), vec![out.clone()]).await,
        vec![RecordResult::Accepted]
    );
    assert!(out_of(&shared[0]));
    assert_eq!(
        take(id(a), vec![out.clone()]).await,
        vec![RecordResult::NotNewer]
    );
    // An exit that does not hold the recipient: neither sending its own
    // record nor passing on a holder's; a recipient this exit does not
    // hold.
    let eve = mail(&shared[1], true).await;
    let foreign = record(outsider, &shared[1], &eve);
    assert_eq!(
        take(id(outsider), vec![foreign]).await,
        vec![RecordResult::NotHolder]
    );
    assert_eq!(
        take(id(outsider), vec![record(a, &shared[1], &eve)]).await,
        vec![RecordResult::NotHolder]
    );
    let stranger = mail(not_mine, true).await;
    assert_eq!(
        take(id(a), vec![record(a, not_mine, &stranger)]).await,
        vec![RecordResult::NotHolder]
    );
    assert!(!out_of(&shared[1]) && !out_of(not_mine));
    // A holder's record without evidence (a click at that exit): it holds
    // there, not here.
    let click = OptOut::sign(&[a; 32], hash_of(&shared[1]), eve.at, true);
    assert_eq!(
        take(id(a), vec![click]).await,
        vec![RecordResult::NoEvidence]
    );
    // A record whose signature is not its exit's (its evidence swapped).
    let mut forged = record(a, &shared[1], &eve);
    forged.evidence = dan.evidence.clone();
    assert_eq!(take(id(a), vec![forged]).await, vec![RecordResult::Forged]);
    // Evidence that does not say what the record says: another recipient's
    // email, an opt-out's email under an opt-back-in, another time; or
    // that does not check (changed after signing).
    // Exit `a`'s record for eve saying `out` at `at`, carrying `evidence`.
    let for_eve = |at: u64, out: bool, evidence: &[u8]| {
        OptOut::sign_with_evidence(&[a; 32], hash_of(&shared[1]), at, out, evidence.to_vec())
    };
    let others_mail = for_eve(dan.at, true, &dan.evidence);
    let flipped = for_eve(eve.at, false, &eve.evidence);
    let retimed = for_eve(eve.at + 1000, true, &eve.evidence);
    let mut changed = eve.evidence.clone();
    let at = changed.len() - 5;
    changed[at] ^= 1;
    let tampered = for_eve(eve.at, true, &changed);
    assert_eq!(
        take(id(a), vec![others_mail, flipped, retimed, tampered]).await,
        vec![RecordResult::BadEvidence; 4]
    );
    assert!(!out_of(&shared[1]));
    // The recipient opts back in by email (a second later, so the
    // provider's time is newer): served again; the older opt-out replayed
    // changes nothing.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let back = mail(&shared[0], false).await;
    assert_eq!(
        take(id(a), vec![record(a, &shared[0], &back)]).await,
        vec![RecordResult::Accepted]
    );
    assert!(!out_of(&shared[0]));
    assert_eq!(take(id(a), vec![out]).await, vec![RecordResult::NotNewer]);
    assert!(!out_of(&shared[0]));
    // Garbage: nothing, counted.
    assert!(
        exit.take_opt_outs(id(a), b"not a batch")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(count("malformed"), 1);
    // The day's quota: one exit gets MAX records checked a day (the six
    // above that reached the evidence check count, kept or not; those
    // refused before it did not), then none until the next day.
    let taken_so_far = 6;
    let mut records = Vec::new();
    for address in &shared[2..2 + MAX_OPT_OUTS_PER_EXIT_PER_DAY as usize] {
        records.push(record(a, address, &mail(address, true).await));
    }
    let mut results = Vec::new();
    for chunk in records.chunks(optout::MAX_OPT_OUTS) {
        results.extend(take(id(a), chunk.to_vec()).await);
    }
    let accepted = results
        .iter()
        .filter(|r| **r == RecordResult::Accepted)
        .count();
    assert_eq!(
        accepted,
        MAX_OPT_OUTS_PER_EXIT_PER_DAY as usize - taken_so_far
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == RecordResult::OverQuota)
            .count(),
        taken_so_far
    );
    let last = shared.last().unwrap().clone();
    let last_mail = mail(&last, true).await;
    t.clock.advance_ms(86_400_000);
    // (The exits' descriptors of the next day.)
    *listed.lock().unwrap() = five_exits(t.clock.now_ms());
    assert_eq!(
        take(id(a), vec![record(a, &last, &last_mail)]).await,
        vec![RecordResult::Accepted]
    );
    assert_eq!(count("forged"), 1);
    assert_eq!(count("not_holder"), 3);
    assert_eq!(count("no_evidence"), 1);
    assert_eq!(count("bad_evidence"), 4);
    drop(exit);
    t.stop();
}
