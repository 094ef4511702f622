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
async fn only_holders_records_are_kept_newest_first_within_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::clock::unix_now_ms();
    let exits = five_exits(now);
    let listed = Arc::new(std::sync::Mutex::new(exits.clone()));
    let view = listed.clone();
    let t = TestExit::start(
        dir.path(),
        [8; 32],
        |_| {},
        Arc::new(move || view.lock().unwrap().clone()),
    )
    .await;
    let exit = t.exit.clone();
    let version = policy::Policy::builtin().version();
    let holders = |h: &[u8; 32]| -> Vec<NodeId> {
        leak_protocol::directory::holders(&exits, h, version, t.clock.now_ms() / 1000)
            .into_iter()
            .map(|d| d.node)
            .collect()
    };
    let me = id(8);
    // Recipients this exit holds with another exit `a`, and one it does
    // not hold at all; an exit that holds none of them.
    let hashes: Vec<[u8; 32]> = (0..4000u32)
        .map(|i| {
            // Distinct values suffice: the ranking hashes them.
            let mut h = [0x5a; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            h
        })
        .collect();
    let (a, shared): (u8, Vec<[u8; 32]>) = (1..=4)
        .map(|s| {
            let shared: Vec<[u8; 32]> = hashes
                .iter()
                .filter(|h| {
                    let hs = holders(h);
                    hs.contains(&me) && hs.contains(&id(s))
                })
                .copied()
                .collect();
            (s, shared)
        })
        .max_by_key(|(_, v)| v.len())
        .unwrap();
    assert!(shared.len() > MAX_OPT_OUTS_PER_EXIT_PER_DAY as usize + 4);
    let not_mine = *hashes.iter().find(|h| !holders(h).contains(&me)).unwrap();
    let outsider = (1..=4u8)
        .find(|s| !holders(&shared[1]).contains(&id(*s)))
        .unwrap();
    let at = now / 1000;
    let take = |from: NodeId, records: &[OptOut]| {
        exit.take_opt_outs(from, &optout::encode_batch(records).unwrap())
            .unwrap()
            .unwrap()
    };
    let count =
        |label: &'static str| Metrics::get(&t.metrics.exit_opt_out_records, "result", label);

    // A holder's opt-out: kept; the same again: not newer.
    let out = OptOut::sign(&[a; 32], shared[0], at, true);
    assert_eq!(
        take(id(a), std::slice::from_ref(&out)),
        vec![RecordResult::Accepted]
    );
    assert!(exit.store.opted_out(&shared[0]).unwrap());
    assert_eq!(take(id(a), &[out]), vec![RecordResult::NotNewer]);
    // An exit that does not hold the recipient: neither sending its own
    // record nor passing on a holder's; a recipient this exit does not
    // hold; a holder passing on an outsider's record.
    let foreign = OptOut::sign(&[outsider; 32], shared[1], at, true);
    assert_eq!(
        take(id(outsider), std::slice::from_ref(&foreign)),
        vec![RecordResult::NotHolder]
    );
    let relayed = OptOut::sign(&[a; 32], shared[1], at, true);
    assert_eq!(
        take(id(outsider), &[relayed]),
        vec![RecordResult::NotHolder]
    );
    assert_eq!(
        take(id(a), &[OptOut::sign(&[a; 32], not_mine, at, true)]),
        vec![RecordResult::NotHolder]
    );
    assert_eq!(take(id(a), &[foreign]), vec![RecordResult::NotHolder]);
    assert!(!exit.store.opted_out(&shared[1]).unwrap());
    assert!(!exit.store.opted_out(&not_mine).unwrap());
    // A record whose signature is not its exit's.
    let mut forged = OptOut::sign(&[a; 32], shared[1], at, true);
    forged.recipient = shared[2];
    assert_eq!(take(id(a), &[forged]), vec![RecordResult::Forged]);
    assert!(!exit.store.opted_out(&shared[2]).unwrap());
    // The recipient opts back in at a holder: served again; an older
    // opt-out replayed changes nothing.
    let back_in = OptOut::sign(&[a; 32], shared[0], at + 5, false);
    assert_eq!(take(id(a), &[back_in]), vec![RecordResult::Accepted]);
    assert!(!exit.store.opted_out(&shared[0]).unwrap());
    let replayed = OptOut::sign(&[a; 32], shared[0], at + 1, true);
    assert_eq!(take(id(a), &[replayed]), vec![RecordResult::NotNewer]);
    assert!(!exit.store.opted_out(&shared[0]).unwrap());
    // Garbage: nothing, counted.
    assert!(exit.take_opt_outs(id(a), b"not a batch").unwrap().is_none());
    assert_eq!(count("malformed"), 1);
    // The day's quota: one exit gets MAX records through a day (the two it
    // had kept above count; those not newer did not), then none until the
    // next day.
    let taken_so_far = 2;
    let mut results = Vec::new();
    for chunk in shared[3..3 + MAX_OPT_OUTS_PER_EXIT_PER_DAY as usize].chunks(optout::MAX_OPT_OUTS)
    {
        let records: Vec<OptOut> = chunk
            .iter()
            .map(|h| OptOut::sign(&[a; 32], *h, at, true))
            .collect();
        results.extend(take(id(a), &records));
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
    let last = *shared.last().unwrap();
    t.clock.advance_ms(86_400_000);
    // (The exits' descriptors of the next day.)
    *listed.lock().unwrap() = five_exits(t.clock.now_ms());
    assert_eq!(
        take(id(a), &[OptOut::sign(&[a; 32], last, at, true)]),
        vec![RecordResult::Accepted]
    );
    assert_eq!(count("forged"), 1);
    assert_eq!(count("not_holder"), 4);
    drop(exit);
    t.stop();
}
