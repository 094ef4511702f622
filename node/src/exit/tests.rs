//! The whole exit on a manual clock: its retry schedule runs in virtual
//! time (a day of retries in well under a second of real time, no sleep).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use leak_protocol::{
    Delay, Leak, MailboxId, MessageId, MixSecret, PathHop, Recipient, Relationship,
    build_reply_block,
    policy::{self, solve_stamp},
};

use super::{store::Known, *};
use crate::{
    clock::{Clock as _, ManualClock},
    config::Transport,
};

mod answers;
mod inbound;
mod optouts;
mod providers;

/// A leak for `exit` (its stamp solved for the policy in force at `now_ms`)
/// with a one-hop reply block.
fn leak_for(exit: &Exit, node_id: NodeId, now_ms: u64) -> Vec<u8> {
    leak_with(
        exit,
        node_id,
        now_ms,
        MessageId([3; 16]),
        "The vase was me.",
        0,
    )
}

/// [`leak_for`] with this id and text, its stamp made for `days_off` days
/// away from `now_ms` (0: a valid stamp).
fn leak_with(
    exit: &Exit,
    node_id: NodeId,
    now_ms: u64,
    message_id: MessageId,
    text: &str,
    days_off: u64,
) -> Vec<u8> {
    leak_to(
        exit,
        node_id,
        now_ms,
        message_id,
        text,
        days_off,
        "alice@leak.test",
    )
}

/// [`leak_with`] to this recipient.
fn leak_to(
    exit: &Exit,
    node_id: NodeId,
    now_ms: u64,
    message_id: MessageId,
    text: &str,
    days_off: u64,
    to: &str,
) -> Vec<u8> {
    let recipient = Recipient::parse(to).unwrap();
    let policy = exit.policy();
    let recipient_hash = policy.recipient_hash(&recipient);
    let mut stamp = solve_stamp(
        &recipient_hash,
        &node_id,
        now_ms / 1000 / policy::STAMP_EPOCH_SECS,
        policy.limits().stamp_bits,
        &message_id,
    );
    stamp.epoch -= days_off;
    encode_leak(exit, message_id, recipient, text, stamp)
}

/// A leak with this stamp and a one-hop reply block, encoded.
fn encode_leak(
    exit: &Exit,
    message_id: MessageId,
    recipient: Recipient,
    text: &str,
    stamp: leak_protocol::payload::Stamp,
) -> Vec<u8> {
    let mut rng = rand::rng();
    let hop = PathHop {
        node: NodeId([9; 32]),
        key: MixSecret::generate(&mut rng).public(),
        key_hint: 0,
        delay: Delay(0),
    };
    let (reply_block, _) =
        build_reply_block(&[hop], MailboxId::from_capability(&[5; 32]), &mut rng).unwrap();
    Leak {
        message_id,
        recipient,
        relationship: Relationship::Friend,
        text: text.into(),
        policy_version: exit.policy().version(),
        stamp,
        reply_block,
        answer_to: None,
    }
    .encode()
    .unwrap()
}

/// A leak to `alice@leak.test` whose stamp has exactly `bits` leading zero
/// bits (not one more), with a message id starting with `tag`.
fn leak_stamped_exactly(exit: &Exit, node_id: NodeId, now_ms: u64, bits: u8, tag: u8) -> Vec<u8> {
    let recipient = Recipient::parse("alice@leak.test").unwrap();
    let hash = exit.policy().recipient_hash(&recipient);
    for i in 0..=255u8 {
        let mut id = [tag; 16];
        id[15] = i;
        let message_id = MessageId(id);
        let epoch = now_ms / 1000 / policy::STAMP_EPOCH_SECS;
        let stamp = solve_stamp(&hash, &node_id, epoch, bits, &message_id);
        let exact =
            policy::verify_stamp(&stamp, &hash, &node_id, &message_id, bits + 1, epoch).is_err();
        if exact {
            return encode_leak(exit, message_id, recipient, "The vase was me.", stamp);
        }
    }
    panic!("no stamp of exactly {bits} bits in 256 tries");
}

/// Waits (real time, in short polls) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// An exit started for a test on a manual clock: its SMTP goes nowhere
/// (port 1: an accepted leak stays queued), the receipts it sends are
/// counted, its intake is fed through `deliver`.
struct TestExit {
    exit: Arc<Exit>,
    node_id: NodeId,
    tx: mpsc::Sender<ExitDelivery>,
    metrics: Arc<Metrics>,
    clock: Arc<ManualClock>,
    receipts: Arc<AtomicUsize>,
    http_addr: std::net::SocketAddr,
    inbound_addr: Option<std::net::SocketAddr>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    _stop: watch::Sender<bool>,
}

impl TestExit {
    /// Starts an exit in `dir` with identity `seed`, the defaults changed
    /// by `configure`, seeing `directory` as its node's exits.
    async fn start(
        dir: &std::path::Path,
        seed: [u8; 32],
        configure: impl FnOnce(&mut Config),
        directory: DirectoryNodes,
    ) -> Self {
        let mut config = Config::defaults(dir.to_path_buf());
        config.exit.domain = "exit.test".into();
        config.exit.transport = Transport::Smtp;
        config.exit.smtp_url = "smtp://127.0.0.1:1".into();
        config.exit.inbound_listen = String::new();
        config.exit.dns_resolver = "off".into();
        config.exit.http_listen = "127.0.0.1:0".into();
        configure(&mut config);
        std::fs::create_dir_all(dir).unwrap();
        let store = Arc::new(Store::open(&config.database_path()).unwrap());
        let policy = Arc::new(PolicyState::load(&config.policy, dir).unwrap());
        let metrics = Arc::new(Metrics::new());
        let clock = Arc::new(ManualClock::new(crate::clock::unix_now_ms()));
        let receipts = Arc::new(AtomicUsize::new(0));
        let counted = receipts.clone();
        let (tx, rx) = mpsc::channel(8);
        let (stop, shutdown) = watch::channel(false);
        let started = start(
            Parts {
                config,
                seed,
                store,
                metrics: metrics.clone(),
                policy,
                send_packet: Arc::new(move |_, _, _| {
                    counted.fetch_add(1, Ordering::SeqCst);
                }),
                send_opt_outs: Arc::new(|_, _| {}),
                directory,
                clock: clock.clone(),
            },
            rx,
            shutdown,
        )
        .await
        .unwrap();
        Self {
            exit: started.exit,
            node_id: NodeId(leak_protocol::crypto::ed25519_public(&seed)),
            tx,
            metrics,
            clock,
            receipts,
            http_addr: started.http_addr,
            inbound_addr: started.inbound_addr,
            tasks: started.tasks,
            _stop: stop,
        }
    }

    /// Hands an encoded leak to the exit's intake.
    async fn deliver(&self, message: Vec<u8>) {
        self.tx
            .send(ExitDelivery {
                message: zeroize::Zeroizing::new(message),
                delay: Delay(0),
            })
            .await
            .unwrap();
    }

    /// Leaks counted at intake with this outcome.
    fn intake(&self, label: &'static str) -> u64 {
        Metrics::get(&self.metrics.exit_leaks, "outcome", label)
    }

    /// Receipts sent.
    fn receipts(&self) -> usize {
        self.receipts.load(Ordering::SeqCst)
    }

    /// Stops its tasks.
    fn stop(self) {
        for (_, task) in self.tasks {
            task.abort();
        }
    }
}

/// A smarthost that refuses every connection: the leak is tried at the
/// start, then once per hour of virtual time (the backoff's cap, jitter or
/// not), and expires at its lifetime of a day, after exactly 25 attempts,
/// each counted; its sender gets one receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_schedule_runs_in_virtual_time() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestExit::start(
        dir.path(),
        [4; 32],
        |config| {
            // Nothing listens on port 1: every attempt fails at once
            // (`network`).
            config.exit.retry_initial_secs = 60;
            config.exit.retry_max_secs = 3600;
            config.exit.lifetime_secs = 86_400;
        },
        Arc::new(Vec::new),
    )
    .await;
    let (exit, clock, metrics) = (t.exit.clone(), t.clock.clone(), t.metrics.clone());
    let start_ms = clock.now_ms();
    t.deliver(leak_for(&exit, t.node_id, clock.now_ms())).await;

    let attempts = || Metrics::get(&metrics.exit_attempts, "result", "temporary");
    let expired = || exit.counts().unwrap().states.get("expired") == Some(&1);
    // An attempt is over once its leak is back in the queue, out of
    // flight, with its count recorded (its next time was set from the
    // clock before that): only then may the clock move on.
    let settled = |n: u32| {
        exit.list(1)
            .unwrap()
            .first()
            .is_some_and(|item| item.state == "retrying" && item.attempts == n)
    };
    until("the first attempt", || settled(1)).await;
    assert_eq!(exit.list(1).unwrap()[0].last_error, "network");
    let real = std::time::Instant::now();
    let mut hours: u32 = 0;
    while !expired() {
        hours += 1;
        assert!(hours <= 30, "still queued after {hours} virtual hours");
        clock.advance_ms(3_600_000);
        exit.clock_moved();
        until("the next attempt", || settled(hours + 1) || expired()).await;
    }
    assert_eq!(
        attempts(),
        25,
        "every attempt counted, none after the lifetime"
    );
    assert_eq!(clock.now_ms() - start_ms, 24 * 3_600_000);
    until("the receipt", || t.receipts() == 1).await;
    assert!(exit.list(10).unwrap().is_empty());
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "a day of retries took {:?}",
        real.elapsed()
    );
    drop(exit);
    t.stop();
}

/// A receipt's extra hold is exponential with the configured mean (within
/// 5 % over 20 000 draws), none when the mean is 0, and never longer than
/// a relay would hold a packet.
#[test]
fn receipt_delays_are_exponential_with_the_configured_mean() {
    use rand::SeedableRng as _;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    assert_eq!(super::schedule::receipt_delay_ms(0, &mut rng), 0);
    let draws: Vec<u64> = (0..20_000)
        .map(|_| super::schedule::receipt_delay_ms(60_000, &mut rng))
        .collect();
    let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
    assert!((mean - 60_000.0).abs() < 3_000.0, "mean {mean} ms");
    // Exponential: about e^-1 of the draws exceed the mean.
    let above = draws.iter().filter(|&&d| d > 60_000).count() as f64 / draws.len() as f64;
    assert!(
        (above - (-1f64).exp()).abs() < 0.02,
        "{above} above the mean"
    );
    let cap = u64::from(leak_protocol::federation::MAX_HOP_DELAY_MS);
    assert!(
        (0..1_000).all(|_| super::schedule::receipt_delay_ms(10 * cap, &mut rng) <= cap),
        "capped at the longest hop delay"
    );
}

/// Costs for attackers first: a leak whose stamp is not valid is refused
/// (answered) and counted as `bad_stamp` before the moderation model runs
/// and before anything is stored; the same text with a valid stamp is
/// refused by the model and remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stamp_is_refused_before_the_model_runs_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestExit::start(dir.path(), [6; 32], |_| {}, Arc::new(Vec::new)).await;
    let exit = t.exit.clone();
    assert!(exit.policy().limits().stamp_bits > 0);
    let hateful = "\"gay people are disgusting\"";
    let (stale, valid) = (MessageId([1; 16]), MessageId([2; 16]));
    for (id, days_off) in [(stale, 3), (valid, 0)] {
        t.deliver(leak_with(
            &exit,
            t.node_id,
            t.clock.now_ms(),
            id,
            hateful,
            days_off,
        ))
        .await;
    }
    until("both answered", || t.receipts() == 2).await;
    until("both counted", || {
        t.intake("bad_stamp") + t.intake("refused") == 2
    })
    .await;
    assert_eq!(t.intake("bad_stamp"), 1);
    assert_eq!(t.intake("refused"), 1, "the model refused the other one");
    let states = exit.counts().unwrap().states;
    assert_eq!(states.get("refused"), Some(&1), "{states:?}");
    assert!(matches!(exit.locate(&stale).unwrap().1, Known::New));
    assert!(matches!(exit.locate(&valid).unwrap().1, Known::Done(_)));
    drop(exit);
    t.stop();
}

/// A policy that normalises addresses per provider keeps what exits
/// recorded under the plainer scheme: an opt-out made under the scheme-1
/// hash of `a.lice@gmail.com` refuses leaks to `A.Lice+x@gmail.com`
/// (scheme 1 normalises it alike; scheme 2 to `alice@gmail.com`), and the
/// day's count under the scheme-1 hash of `b.ob@gmail.com` counts against
/// `B.ob@gmail.com`'s cap. The refusals are counted. (What scheme 1
/// recorded under one spelling cannot be found from another, such as
/// `alice@googlemail.com`: that is what scheme 2 fixes from now on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_outs_and_counts_recorded_under_the_older_hash_still_hold() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestExit::start(dir.path(), [7; 32], |_| {}, Arc::new(Vec::new)).await;
    let (exit, clock) = (t.exit.clone(), t.clock.clone());
    let builtin = exit.policy();
    assert_eq!(
        builtin.limits().address_normalization,
        policy::recipient::Normalization::Providers
    );
    let basic = policy::Policy::from_toml(&policy::BUILTIN_TOML.replacen(
        "address_normalization = 2\n",
        "",
        1,
    ))
    .unwrap();
    let day = clock.now_ms() / DAY_MS;
    let opted = Recipient::parse("a.lice@gmail.com").unwrap();
    let counted = Recipient::parse("b.ob@gmail.com").unwrap();
    assert_ne!(basic.recipient_hash(&opted), builtin.recipient_hash(&opted));
    exit.store
        .record_opt_outs(&[leak_protocol::policy::optout::OptOut::sign(
            &[0; 32],
            basic.recipient_hash(&opted),
            clock.now_ms() / 1000,
            true,
        )])
        .unwrap();
    // A full day's count for b.ob under the scheme-1 hash: leaks accepted
    // (queued, undeliverable) before the policy changed.
    for i in 0..builtin.limits().per_recipient_per_day {
        let entry = store::Entry {
            accepted_ms: clock.now_ms(),
            next_attempt_ms: clock.now_ms() + DAY_MS,
            attempts: 0,
            last_error: String::new(),
            reply_block: Vec::new(),
        };
        let id = MessageId([100 + u8::try_from(i).unwrap(); 16]);
        exit.store
            .accept(
                &id,
                b"an earlier leak",
                &entry,
                &basic.recipient_hash(&counted),
                day,
            )
            .unwrap();
    }
    let sends = [
        (MessageId([1; 16]), "A.Lice+x@gmail.com"),
        (MessageId([2; 16]), "B.ob@gmail.com"),
        (MessageId([3; 16]), "carol@gmail.com"),
    ];
    for (id, to) in sends {
        let text = "The vase was me.";
        t.deliver(leak_to(&exit, t.node_id, clock.now_ms(), id, text, 0, to))
            .await;
    }
    until("all three taken", || {
        t.intake("opted_out") + t.intake("rate_limited") + t.intake("accepted") == 3
    })
    .await;
    assert_eq!(t.intake("opted_out"), 1);
    assert_eq!(t.intake("rate_limited"), 1);
    assert_eq!(t.intake("accepted"), 1);
    drop(exit);
    t.stop();
}

/// An exit descriptor with one key for every epoch around `now_ms`.
fn exit_descriptor(
    node: NodeId,
    policy_version: u32,
    now_ms: u64,
) -> leak_protocol::directory::Descriptor {
    use leak_protocol::directory::{Descriptor, EpochKey, ExitInfo, Roles};
    let key = MixSecret::generate(&mut rand::rng()).public();
    let epoch = now_ms / 1000 / 3600;
    Descriptor {
        node,
        addresses: vec!["/ip4/127.0.0.1/tcp/4700".into()],
        roles: Roles {
            relay: true,
            exit: true,
        },
        family: String::new(),
        exit: Some(ExitInfo {
            domain: "exit.test".into(),
            policy_version,
            stamp_bits: 0,
        }),
        epoch_period_secs: 3600,
        mix_keys: (epoch - 1..=epoch + 1)
            .map(|epoch| EpochKey { epoch, key })
            .collect(),
        software: "test".into(),
        published_at: now_ms / 1000,
        traffic: None,
    }
}

/// One exit per recipient: a leak whose recipient another exit of the
/// directory is responsible for is refused (`exit.not_responsible`,
/// answered, counted, remembered), one whose recipient is this exit's is
/// taken; an exit of another policy version does not count; an exit that
/// does not find itself in its directory refuses what a listed exit could
/// take, and takes a leak only while no exit is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_refuses_the_recipients_another_exit_is_responsible_for() {
    let dir = tempfile::tempdir().unwrap();
    let seed = [8u8; 32];
    let me = NodeId(leak_protocol::crypto::ed25519_public(&seed));
    let other = NodeId([0xee; 32]);
    let stale = NodeId([0xdd; 32]);
    let current = policy::Policy::builtin();
    let version = current.version();
    let now = crate::clock::unix_now_ms();
    let listed = Arc::new(std::sync::Mutex::new(vec![
        exit_descriptor(me, version, now),
        exit_descriptor(other, version, now),
        exit_descriptor(stale, version + 1, now),
    ]));
    let view = listed.clone();
    let t = TestExit::start(
        dir.path(),
        seed,
        |_| {},
        Arc::new(move || view.lock().unwrap().clone()),
    )
    .await;
    let exit = t.exit.clone();
    assert_eq!(exit.policy().version(), version);
    // A recipient of each exit, by the protocol's rule.
    let nodes = listed.lock().unwrap().clone();
    let owner = |to: &str| {
        let hash = current.recipient_hash(&Recipient::parse(to).unwrap());
        leak_protocol::directory::responsible_exit(&nodes, &hash, version, now / 1000)
            .unwrap()
            .node
    };
    let addresses: Vec<String> = (0..64).map(|i| format!("r{i}@leak.test")).collect();
    let mine = addresses.iter().find(|a| owner(a) == me).unwrap().clone();
    let theirs: Vec<String> = addresses
        .iter()
        .filter(|a| owner(a) == other)
        .take(2)
        .cloned()
        .collect();
    assert!(addresses.iter().all(|a| owner(a) != stale));
    let leak = |id: u8, to: &str| {
        let text = "The vase was me.";
        leak_to(
            &exit,
            me,
            t.clock.now_ms(),
            MessageId([id; 16]),
            text,
            0,
            to,
        )
    };
    t.deliver(leak(1, &mine)).await;
    t.deliver(leak(2, &theirs[0])).await;
    until("both taken", || {
        t.intake("accepted") + t.intake("not_responsible") == 2
    })
    .await;
    assert_eq!(t.intake("accepted"), 1);
    assert_eq!(t.intake("not_responsible"), 1);
    assert!(matches!(
        exit.locate(&MessageId([2; 16])).unwrap().1,
        Known::Done(_)
    ));
    // Gone from its own directory (removed from the roster) while another
    // exit is listed: it knows neither the counts nor the opt-outs, so it
    // refuses even a recipient it held before.
    listed.lock().unwrap().retain(|d| d.node != me);
    t.deliver(leak(3, &mine)).await;
    until("the third refused", || t.intake("not_responsible") == 2).await;
    assert_eq!(t.intake("accepted"), 1);
    // No exit of its policy version listed at all (a federation's first
    // moments): it takes the leak.
    listed.lock().unwrap().retain(|d| d.node != other);
    t.deliver(leak(4, &theirs[1])).await;
    until("the fourth taken", || t.intake("accepted") == 2).await;
    assert_eq!(t.intake("not_responsible"), 2);
    drop(exit);
    t.stop();
}

/// Stamp difficulty rises with the exit's load: past
/// `exit.busy_leaks_per_hour` leaks with valid stamps in the hour it asks
/// one more bit and announces it (the descriptor's `stamp_bits`); a stamp
/// of the policy's bits still passes for the grace a client's older
/// descriptor needs, and is refused (`bad_stamp`) after it, while one of
/// the new bits passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_get_harder_under_load_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    // A policy with cheap stamps (12 bits) and room for many leaks to one
    // recipient, signed by a maintainer the exit trusts.
    let policy_toml = policy::BUILTIN_TOML
        .replacen(
            "per_recipient_per_day = 3",
            "per_recipient_per_day = 100",
            1,
        )
        .replacen("stamp_bits = 19", "stamp_bits = 12", 1)
        .replacen(
            &format!("version = {}", policy::Policy::builtin().version()),
            &format!("version = {}", policy::Policy::builtin().version() + 1),
            1,
        );
    let policy_file = dir.path().join("policy.signed");
    let maintainer = [3u8; 32];
    std::fs::write(
        &policy_file,
        policy::SignedPolicy::sign(&policy_toml, &maintainer)
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let t = TestExit::start(
        dir.path(),
        [9; 32],
        |config| {
            config.exit.busy_leaks_per_hour = 2;
            config.exit.per_recipient_per_day = 100;
            config.policy.file = policy_file.display().to_string();
            config.policy.trusted_keys = vec![hex::encode(leak_protocol::crypto::ed25519_public(
                &maintainer,
            ))];
        },
        Arc::new(Vec::new),
    )
    .await;
    let (exit, clock) = (t.exit.clone(), t.clock.clone());
    let base = exit.policy().limits().stamp_bits;
    assert_eq!(base, 12);
    let stamped =
        |bits: u8, tag: u8| leak_stamped_exactly(&exit, t.node_id, clock.now_ms(), bits, tag);
    assert_eq!(exit.announce_stamp_bits(), base);
    assert!(!exit.stamp_bits_changed());
    // Three leaks in the hour: one more than busy.
    for tag in 1..=3 {
        t.deliver(stamped(base, tag)).await;
    }
    until("three accepted", || t.intake("accepted") == 3).await;
    assert!(exit.stamp_bits_changed());
    assert_eq!(exit.announce_stamp_bits(), base + 1);
    // Within the grace, the policy's bits still pass.
    clock.advance_ms(super::surcharge::GRACE_MS);
    t.deliver(stamped(base, 4)).await;
    until("the fourth accepted", || t.intake("accepted") == 4).await;
    // After it, they do not; the announced bits do.
    clock.advance_ms(60_000);
    t.deliver(stamped(base, 5)).await;
    until("the fifth refused", || t.intake("bad_stamp") == 1).await;
    t.deliver(stamped(base + 1, 6)).await;
    until("the sixth accepted", || t.intake("accepted") == 5).await;
    drop(exit);
    t.stop();
}
