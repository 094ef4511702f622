//! The federation in virtual time (`leak_tests::harness`): epochs, mixing
//! delays, mailbox expiry, the exit's retries and the sender's
//! retransmissions, over days of virtual time, in milliseconds, with the
//! node's and the client's own decision code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use leak_protocol::{MailboxId, Outcome, PathHop, ReplyBlock, build_reply_block};
use leak_tests::harness::{Endpoint, Loss, MailOutage, Settings, VirtualFederation};
use rand::{SeedableRng as _, rngs::StdRng};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

fn federation(settings: Settings) -> VirtualFederation {
    VirtualFederation::new(settings)
}

#[test]
fn a_leak_crosses_three_hops_and_its_receipt_comes_back() {
    let mut fed = federation(Settings::default());
    let alice = fed.add_sender();
    let sent_at = fed.now_ms();
    let leak = fed.send(alice, "bob@example.org", "I took your bike.");
    assert!(fed.run_until_settled(10 * MINUTE));
    assert_eq!(fed.receipt(alice, leak), Some(&Outcome::Delivered));
    let deliveries = fed.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].recipient, "bob@example.org");
    assert_eq!(deliveries[0].text, "I took your bike.");
    assert_eq!(deliveries[0].message_id, fed.message_id(alice, leak));
    // Three links at least on the way.
    assert!(deliveries[0].at_ms >= sent_at + 3 * fed.settings().link_ms);
    assert_eq!(fed.leak(alice, leak).attempts(), 1);
}

/// Each hop holds a packet for the delay its sender drew (exponential,
/// mean `mean_delay_ms`): over many leaks the time to delivery is about
/// the sum of the hops' means, and relays hold packets meanwhile.
#[test]
fn mixing_delays_are_honoured() {
    let mean = 20_000;
    let mut fed = federation(Settings {
        mean_delay_ms: mean,
        seed: 7,
        ..Settings::default()
    });
    let senders: Vec<_> = (0..100).map(|_| fed.add_sender()).collect();
    let start = fed.now_ms();
    for (i, s) in senders.iter().enumerate() {
        fed.send(*s, &format!("r{i}@example.org"), "I am sorry.");
    }
    fed.run_for(5_000);
    let held: usize = (0..fed.relay_count()).map(|r| fed.relay(r).held()).sum();
    assert!(held > 50, "packets are held for their delays ({held} held)");
    assert!(fed.run_until_settled(HOUR));
    let deliveries = fed.deliveries();
    assert_eq!(deliveries.len(), 100);
    let mean_latency =
        deliveries.iter().map(|d| d.at_ms - start).sum::<u64>() as f64 / deliveries.len() as f64;
    // Forward: every hop holds it, the entry, the mix relays and the exit
    // (the default four; 100 leaks: the mean's standard error is 5 %).
    let expected = fed.settings().hops as f64 * f64::from(mean);
    assert!(
        (0.7 * expected..1.3 * expected).contains(&mean_latency),
        "mean latency {mean_latency} ms, expected about {expected} ms"
    );
}

/// A relay keeps the key of the previous epoch (a packet built for epoch
/// e is taken during e + 1) and forgets older ones (dropped from e + 2),
/// day after day.
#[test]
fn keys_rotate_on_the_epoch_schedule_for_days() {
    let mut fed = federation(Settings::default());
    let period_ms = fed.settings().epoch_secs * 1000;
    let ahead = u64::from(fed.settings().keys_ahead);
    // Into the middle of an epoch.
    let into = period_ms / 2 - fed.now_ms() % period_ms + period_ms;
    fed.run_for(into);
    let e = fed.now_ms() / period_ms;
    let target = 0;
    let descriptor = fed.relay(target).descriptor().clone();
    let (late_reply, late_block) = reply_to(&descriptor, e);
    let (too_late_reply, too_late_block) = reply_to(&descriptor, e);

    fed.run_for(period_ms);
    let (_, packet) = late_block.into_packet(b"one epoch late").unwrap();
    fed.inject(Endpoint::Relay(1), target, packet);
    fed.run_for(1_000);
    assert_eq!(fed.relay(target).dropped("unknown_epoch"), 0);
    assert_eq!(
        fed.relay(target).mailbox_replies(),
        1,
        "taken one epoch late"
    );
    let _ = late_reply;

    fed.run_for(period_ms);
    let (_, packet) = too_late_block.into_packet(b"two epochs late").unwrap();
    fed.inject(Endpoint::Relay(1), target, packet);
    fed.run_for(1_000);
    assert_eq!(fed.relay(target).dropped("unknown_epoch"), 1);
    assert_eq!(fed.relay(target).mailbox_replies(), 1);
    let _ = too_late_reply;

    // Three days on: each relay holds the previous, the current and the
    // published future epochs' keys, no more, and leaks still go through.
    fed.run_for(3 * DAY);
    let now_epoch = fed.now_ms() / period_ms;
    for r in 0..fed.relay_count() {
        let epochs = fed.relay(r).key_epochs();
        assert_eq!(
            epochs,
            (now_epoch - 1..=now_epoch + ahead).collect::<Vec<_>>(),
            "relay {r}"
        );
    }
    let s = fed.add_sender();
    let leak = fed.send(s, "carol@example.org", "Three days later.");
    assert!(fed.run_until_settled(10 * MINUTE));
    assert_eq!(fed.receipt(s, leak), Some(&Outcome::Delivered));
}

/// A one-hop reply block to `descriptor`'s mailbox, for its key of `epoch`.
fn reply_to(
    descriptor: &leak_protocol::directory::Descriptor,
    epoch: u64,
) -> ([u8; 32], ReplyBlock) {
    let hop = PathHop {
        node: descriptor.node,
        key: descriptor.mix_key(epoch).unwrap(),
        key_hint: epoch as u8,
        delay: leak_protocol::Delay(0),
    };
    let capability = [epoch as u8; 32];
    let mut rng = StdRng::seed_from_u64(epoch);
    let (block, _keys) =
        build_reply_block(&[hop], MailboxId::from_capability(&capability), &mut rng).unwrap();
    (capability, block)
}

/// A reply nobody fetches is forgotten once its lifetime (a day by default)
/// has passed.
#[test]
fn unfetched_mailbox_replies_expire() {
    let mut fed = federation(Settings::default());
    let period_ms = fed.settings().epoch_secs * 1000;
    let e = fed.now_ms() / period_ms;
    let descriptor = fed.relay(2).descriptor().clone();
    let (_, block) = reply_to(&descriptor, e);
    let (_, packet) = block.into_packet(b"never fetched").unwrap();
    fed.inject(Endpoint::Relay(0), 2, packet);
    fed.run_for(HOUR);
    assert_eq!(fed.relay(2).mailbox_replies(), 1);
    fed.run_for(DAY - 2 * HOUR);
    assert_eq!(fed.relay(2).mailbox_replies(), 1, "still within its day");
    fed.run_for(2 * HOUR);
    assert_eq!(fed.relay(2).mailbox_replies(), 0, "expired");
}

/// The exit's mail server is down for 40 minutes: every leak waits at the
/// exit, retried with growing pauses, and is delivered once when it is
/// back, though its sender sent it three times and gave up.
#[test]
fn the_exit_retries_through_a_mail_outage_and_delivers_once() {
    // Three hops (timings below are for three; the default is four).
    let mut fed = federation(Settings {
        seed: 3,
        hops: 3,
        ..Settings::default()
    });
    let start = fed.now_ms();
    fed.mail_outage(MailOutage {
        from_ms: start,
        until_ms: start + 40 * MINUTE,
    });
    let senders: Vec<_> = (0..5).map(|_| fed.add_sender()).collect();
    for (i, s) in senders.iter().enumerate() {
        fed.send(*s, &format!("outage{i}@example.org"), "I broke your vase.");
    }
    fed.run_for(30 * MINUTE);
    assert!(fed.deliveries().is_empty());
    for s in &senders {
        let leak = fed.leak(*s, 0);
        assert_eq!(leak.attempts(), 3, "sent again, twice");
        assert!(
            leak.gave_up_ms.is_some(),
            "no receipt while the server is down"
        );
    }
    fed.run_for(3 * HOUR);
    let deliveries = fed.deliveries();
    assert_eq!(deliveries.len(), 5, "each once");
    for d in &deliveries {
        assert!(d.at_ms >= start + 40 * MINUTE);
        // Backoff from a minute, doubling up to an hour, jittered: about
        // six attempts cover 40 minutes.
        assert!((4..=9).contains(&d.attempts), "{} attempts", d.attempts);
    }
    let exit = fed.relay(fed.relay_count() - 1).exit().unwrap();
    assert_eq!(exit.repeats, 10, "the retransmissions were recognised");
    assert_eq!(exit.queued(), 0);
}

/// A mail server down for longer than a leak's lifetime (five days by
/// default): the exit gives the leak up then, as bounced, and delivers
/// nothing.
#[test]
fn the_exit_gives_up_after_the_lifetime() {
    let mut fed = federation(Settings::default());
    let start = fed.now_ms();
    fed.mail_outage(MailOutage {
        from_ms: start,
        until_ms: start + 7 * DAY,
    });
    let s = fed.add_sender();
    let leak = fed.send(s, "gone@example.org", "Nobody will read this.");
    fed.run_for(5 * DAY - HOUR);
    let id = fed.message_id(s, leak);
    let exit = fed.relay(fed.relay_count() - 1).exit().unwrap();
    assert_eq!(exit.outcome(&id), None, "still tried within its lifetime");
    assert_eq!(exit.queued(), 1);
    fed.run_for(2 * HOUR);
    let exit = fed.relay(fed.relay_count() - 1).exit().unwrap();
    assert_eq!(exit.outcome(&id), Some(&Outcome::Bounced));
    assert_eq!(exit.queued(), 0);
    // An hour apart at most (the cap), from a minute: about 5 · 24 + 6.
    assert!(
        (100..=250).contains(&exit.deferrals),
        "{} attempts",
        exit.deferrals
    );
    assert!(fed.deliveries().is_empty());
}

/// The first packet is lost on its way to the exit: without a receipt, the
/// sender sends the same leak again over a fresh path after the receipt
/// timeout and a pause, and the receipt of the second attempt ends it.
#[test]
fn a_lost_packet_is_sent_again_and_delivered_once() {
    // Hops of 200 ms: the first copy reaches the exit inside the loss
    // window (at the default minute per hop it would arrive after it).
    let mut fed = federation(Settings {
        seed: 5,
        mean_delay_ms: 200,
        ..Settings::default()
    });
    let exit = fed.relay_count() - 1;
    let start = fed.now_ms();
    fed.lose(Loss {
        from: None,
        to: Some(exit),
        until_ms: start + 30_000,
    });
    let s = fed.add_sender();
    let leak = fed.send(s, "dave@example.org", "It was me.");
    assert!(fed.run_until_settled(HOUR));
    assert_eq!(fed.lost(), 1);
    assert_eq!(fed.receipt(s, leak), Some(&Outcome::Delivered));
    assert_eq!(fed.leak(s, leak).attempts(), 2);
    let deliveries = fed.deliveries();
    assert_eq!(deliveries.len(), 1);
    let policy = fed.settings().retransmit;
    assert!(deliveries[0].at_ms >= start + policy.receipt_timeout_ms + policy.mean_pause_ms / 2);
}

/// An exit that withholds receipts gets every attempt, delivers once, and
/// the sender ends with no receipt after its last attempt's window.
#[test]
fn withheld_receipts_end_in_no_receipt_after_the_last_attempt() {
    let mut fed = federation(Settings {
        seed: 9,
        ..Settings::default()
    });
    let exit = fed.relay_count() - 1;
    fed.lose(Loss {
        from: Some(Endpoint::Relay(exit)),
        to: None,
        until_ms: u64::MAX,
    });
    let s = fed.add_sender();
    let leak = fed.send(s, "erin@example.org", "I read your diary.");
    assert!(fed.run_until_settled(HOUR));
    let sent = fed.leak(s, leak);
    assert_eq!(sent.attempts(), 3);
    assert!(sent.receipt.is_none());
    let gave_up = sent.gave_up_ms.unwrap();
    assert!(gave_up >= sent.first_sent_ms + 3 * fed.settings().retransmit.receipt_timeout_ms);
    assert_eq!(fed.deliveries().len(), 1);
}

/// A global observer sees every link a leak and its receipt use: three
/// forward, two back (a direct sender on three hops).
#[test]
fn every_link_of_a_leak_and_its_receipt_is_observed() {
    let mut fed = federation(Settings {
        record_links: true,
        hops: 3,
        ..Settings::default()
    });
    let s = fed.add_sender();
    let leak = fed.send(s, "frank@example.org", "I lied.");
    assert!(fed.run_until_settled(10 * MINUTE));
    assert_eq!(fed.receipt(s, leak), Some(&Outcome::Delivered));
    let links = fed.transmissions();
    assert_eq!(links.len(), 5, "{links:?}");
    assert_eq!(links[0].from, Endpoint::Sender(0));
    assert!(links.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // The receipt ends at the sender's entry, where its mailbox is.
    assert_eq!(links[4].to, links[0].to);
}

/// The same packet twice: the second is dropped as a replay, the reply is
/// stored once.
#[test]
fn a_replayed_packet_is_dropped() {
    let mut fed = federation(Settings::default());
    let period_ms = fed.settings().epoch_secs * 1000;
    let e = fed.now_ms() / period_ms;
    let descriptor = fed.relay(1).descriptor().clone();
    let (_, block) = reply_to(&descriptor, e);
    let (_, packet) = block.into_packet(b"once").unwrap();
    fed.inject(Endpoint::Relay(0), 1, packet.clone());
    fed.inject(Endpoint::Relay(2), 1, packet);
    fed.run_for(1_000);
    assert_eq!(fed.relay(1).dropped("replay"), 1);
    assert_eq!(fed.relay(1).mailbox_replies(), 1);
}

/// Hundreds of senders and tens of relays: every leak delivered once, every
/// receipt home.
#[test]
fn three_hundred_senders_over_twenty_relays() {
    let mut fed = federation(Settings {
        relays: 18,
        exits: 2,
        seed: 11,
        ..Settings::default()
    });
    let senders: Vec<_> = (0..300).map(|_| fed.add_sender()).collect();
    for (i, s) in senders.iter().enumerate() {
        fed.run_for(2_000);
        fed.send(*s, &format!("r{i}@example.org"), "Hello from far away.");
    }
    assert!(fed.run_until_settled(HOUR));
    assert_eq!(fed.deliveries().len(), 300);
    let mut ids: Vec<_> = fed.deliveries().iter().map(|d| d.message_id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 300, "each once");
    for s in &senders {
        assert_eq!(fed.receipt(*s, 0), Some(&Outcome::Delivered));
    }
    assert_eq!(fed.dropped("replay"), 0);
    assert_eq!(fed.dropped("unknown_epoch"), 0);
}
