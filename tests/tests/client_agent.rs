//! The always-on agent (`leak agent`) against a federation of `leak-node`
//! processes on 127.0.0.1: `leak send` refuses without it, the agent emits
//! cover while idle (counted at its guard), leaks handed to it are
//! delivered (with `--wait`, without, and `--within`) or refused by the
//! exit, and a leak accepted
//! by an agent that is then killed (SIGKILL) is delivered exactly once
//! after a restart, its text gone from the disk afterwards; a leak refused
//! by an exit not responsible for its recipient (another exit joined) goes
//! to the responsible one.
//!
//! Cover intervals are short here (150 ms) and mixing delays 20 ms; the
//! tests wait for events, never for wall-clock durations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_common;

use client_common::{Federation, Sender, json_line, stderr, stdout};
use leak_tests::process::{metric, scrape_metrics};
use libp2p::PeerId;

/// The number after `label` in `text` ("sent 12 drop(s)": label "sent ").
fn number_after(text: &str, label: &str) -> u64 {
    let rest = text
        .split(label)
        .nth(1)
        .unwrap_or_else(|| panic!("no {label:?} in {text}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {text}"))
}

/// The files under `dir` (recursively) that hold any of `needles`, byte
/// for byte in their contents or their names.
fn files_holding(dir: &std::path::Path, needles: &[&[u8]]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_holding(&path, needles));
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        bytes.extend(path.file_name().unwrap().as_encoded_bytes());
        if needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == *n))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

fn guard_of(status: &str) -> PeerId {
    let rest = status.split("; guard ").nth(1).expect("a guard line");
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_agent_sends_cover_and_delivers_leaks_once_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start_with_metrics(dir.path(), 4, true);
    let sender = Sender::fast(dir.path(), &fed);

    // No agent: refused, nothing sent, and the way out is spelt out.
    let text = "Thank you for covering for me last week.";
    let out = sender.run(&["send", "--to", "ann@example.com", "--as", "coworker", text]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for needle in [
        "no agent is running",
        "leak agent",
        "systemctl --user start leak-agent",
        "--direct",
        "no cover traffic",
        "reveals the moment you send",
    ] {
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
    }
    assert!(fed.emails().is_empty());

    // Idle, the agent sends cover through its guard: the guard counts the
    // packets, and loops come back to the agent's mailbox.
    let mut agent = sender.start_agent();
    // Only its owner can talk to it.
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    let state = sender.home.join("state");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("agent.sock")), 0o600);
    let status = sender.wait_status(&[], "loops came back", |s| {
        s.contains("Agent: running") && number_after(s, " loop(s) (") >= 3
    });
    let guard = guard_of(&status);
    let metrics = fed
        .relay_by_peer(&guard)
        .unwrap_or_else(|| panic!("the guard {guard} is not a relay"))
        .started
        .metrics_addr();
    let received = || {
        metric(
            &scrape_metrics(metrics).unwrap(),
            "leak_packets_received_total",
            None,
        )
    };
    let before = received();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while received() < before + 10.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the guard saw no cover: {}",
            agent.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let status = stdout(&sender.run(&["status"]));
    assert!(number_after(&status, "sent ") > 0, "drops: {status}");
    assert!(status.contains("anonymity: "), "{status}");
    assert!(status.contains("No leaks sent yet."), "{status}");

    // Handed over: the command returns at once; the receipt shows up in
    // `leak status`.
    let out = sender.run(&["send", "--to", "ann@example.com", "--as", "coworker", text]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("queued; the receipt will appear in `leak status`"),
        "{}",
        stdout(&out)
    );
    sender.wait_status(&["--json"], "delivered", |s| {
        s.contains(r#""outcome":"delivered""#)
    });
    assert_eq!(fed.emails_to("ann@example.com").len(), 1);
    assert!(
        fed.emails_to("ann@example.com")[0].contains(text),
        "the text arrived"
    );

    // --wait: the command ends with the receipt; --within: later, at random.
    let out = sender.run(&[
        "send",
        "--wait",
        "--json",
        "--within",
        "2s",
        "--to",
        "ben@example.com",
        "--as",
        "friend",
        "You were the kindest person on the team.",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(json_line(&out).contains(r#""outcome":"delivered""#));
    assert_eq!(fed.emails_to("ben@example.com").len(), 1);

    // The exit's local rules refuse this one: the receipt says so.
    let out = sender.run(&[
        "send",
        "--wait",
        "--json",
        "--to",
        "dan@example.com",
        "--as",
        "friend",
        "I still think about the pineapple cake you made.",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json = json_line(&out);
    assert!(json.contains(r#""outcome":"refused""#), "{json}");
    assert!(json.contains(r#""rule":"local.pineapple""#), "{json}");
    assert!(fed.emails_to("dan@example.com").is_empty());

    // Accepted, then the agent is killed before (or while) the leak leaves;
    // restarted, it delivers it exactly once under the same message id.
    let out = sender.run(&[
        "send",
        "--json",
        "--within",
        "3s",
        "--to",
        "cat@example.com",
        "--as",
        "family",
        "I never told you how much your letters meant.",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    agent.kill();
    let json = json_line(&out);
    let id = json
        .split(r#""message_id":""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let outbox = state.join("outbox");
    // A leak's files: ID.json and ID.secret (`key-id` names the outbox key).
    let files = || {
        std::fs::read_dir(&outbox)
            .unwrap()
            .filter(|f| f.as_ref().unwrap().file_name() != "key-id")
            .count()
    };
    // Waiting, its text is nowhere readable on the disk, nor its
    // recipient in the outbox (the conversation keeps the address for
    // follow-ups: `threads/`, documented).
    let held = files_holding(&state, &[b"how much your letters meant"]);
    assert!(held.is_empty(), "{held:?}");
    assert!(files_holding(&outbox, &[b"cat@example.com"]).is_empty());
    let out = sender.run(&["status", &id]);
    assert!(
        stderr(&out).contains("wait in the agent's outbox") || files() == 0,
        "{}",
        stderr(&out)
    );
    let _agent = sender.start_agent();
    // Ann's and Ben's were delivered before: this is the third.
    // (A listing read while the agent ends the leak can show its pending
    // record and its summary at once: wait for the summary alone.)
    let done = sender.wait_status(&["--json"], "delivered after the restart", |s| {
        s.matches(r#""outcome":"delivered""#).count() == 3 && !s.contains(r#""outcome":"pending""#)
    });
    assert_eq!(fed.emails_to("cat@example.com").len(), 1);
    // Finished leaks leave nothing in the outbox: the texts are gone. (The
    // agent removes the files just after the leak's summary is written.)
    let wait_empty = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while files() != 0 {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_empty("the outbox is not emptied");
    // Nothing that matches: an ended leak is listed without its id, and no
    // file in the state directory holds the id, in hex or as bytes.
    assert!(done.contains("c…@example.com"), "{done}");
    assert!(!done.contains(&id), "{done}");
    let out = sender.run(&["status", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let raw: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
        .collect();
    let held = files_holding(&state, &[id.as_bytes(), &raw]);
    assert!(
        held.is_empty(),
        "the state directory still holds the id: {held:?}"
    );
    assert!(
        !files_holding(&state, &["c…@example.com".as_bytes()]).is_empty(),
        "the scan finds what is there"
    );
    // Every leak was sent once: no duplicate at the exit either.
    assert_eq!(fed.emails().len(), 3);

    // The machine stops while a leak waits to leave ("later"): its text
    // was sealed under a key kept in memory only (/dev/shm here), so after
    // the restart it cannot be read, by the agent or anybody; the agent
    // ends it as lost and says so.
    let out = sender.run(&[
        "send",
        "--json",
        "--within",
        "1h",
        "--to",
        "dee@example.com",
        "--as",
        "friend",
        "Thank you for the walk by the canal.",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(files(), 2, "the entry and its sealed secret");
    assert!(files_holding(&state, &[b"walk by the canal"]).is_empty());
    assert!(files_holding(&outbox, &[b"dee@example.com"]).is_empty());
    let key_id = std::fs::read_to_string(outbox.join("key-id")).unwrap();
    let key_file = std::path::PathBuf::from(format!(
        "/dev/shm/leak-outbox-keys-{}/{}.key",
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&state).unwrap()),
        key_id.trim()
    ));
    assert!(key_file.is_file(), "{}", key_file.display());
    drop(_agent);
    std::fs::remove_file(&key_file).unwrap();
    let _agent = sender.start_agent();
    let lost = sender.wait_status(&["--json"], "the waiting leak ended as lost", |s| {
        s.contains(r#""outcome":"lost""#)
    });
    assert!(lost.contains("d…@example.com"), "{lost}");
    let out = sender.run(&["status"]);
    assert!(
        stdout(&out).contains("lost in a restart"),
        "{}",
        stdout(&out)
    );
    // The agent removes the outbox files just after the summary is written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while files() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lost leak's files stay"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(fed.emails_to("dee@example.com").is_empty());
}

/// An exit joins after the agent fetched its directory: the agent sends a
/// leak through the exit its directory names, that exit (which knows the
/// newcomer) refuses it as not responsible for the recipient, and the
/// agent fetches the directory at once, solves a stamp for the exit that
/// is responsible and sends the same leak through it: delivered once,
/// `Delivered` in the end, by the new exit.
#[test]
fn a_leak_refused_as_not_responsible_goes_to_the_responsible_exit() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start_with_metrics(dir.path(), 4, true);
    let sender = Sender::fast(dir.path(), &fed);
    let _agent = sender.start_agent();

    // The second exit joins; the first learns of it (its directory has
    // six nodes), the agent's directory (every 30 minutes) does not yet.
    let second = fed.start_another_exit("exit-b");
    let first = fed.exit.as_ref().unwrap();
    let first_metrics = first.started.metrics_addr();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while metric(
        &scrape_metrics(first_metrics).unwrap(),
        "leak_directory_nodes",
        None,
    ) < 6.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "exit A never saw exit B"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A recipient the new exit is responsible for.
    let policy = leak_protocol::policy::Policy::builtin();
    let node = |started: &leak_tests::process::Started| {
        leak_net::peer_id::node_id_of(&started.peer_id).unwrap()
    };
    let (a, b) = (node(&first.started), node(&second.started));
    let to = (0..64)
        .map(|i| format!("moved{i}@example.com"))
        .find(|to| {
            let hash = policy.recipient_hash(&leak_protocol::Recipient::parse(to).unwrap());
            let rank = |n| (leak_protocol::federation::exit_rank(&hash, n), n.0);
            rank(&b) > rank(&a)
        })
        .unwrap();

    let out = sender.run(&[
        "send",
        "--wait",
        "--json",
        "--to",
        &to,
        "--as",
        "friend",
        "I kept the postcard you sent from Lisbon.",
    ]);
    let log = std::fs::read_to_string(sender.home.join("agent.log")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{}\n{log}", stderr(&out));
    assert!(
        json_line(&out).contains(r#""outcome":"delivered""#),
        "{}",
        json_line(&out)
    );
    assert!(
        log.contains("refused a leak as not responsible")
            && log.contains("goes through the exit responsible"),
        "{log}"
    );
    assert_eq!(fed.emails_to(&to).len(), 1);
    // Exit A refused it (counted), exit B delivered it.
    let refused = metric(
        &scrape_metrics(first_metrics).unwrap(),
        "leak_exit_leaks_total",
        Some("not_responsible"),
    );
    assert!(refused >= 1.0, "{refused}");
}

/// An exit that goes silent (SIGSTOP) while a leak is on its way: without
/// a receipt the agent sends the leak again (after the p99.9 of a round
/// trip, here about 18 s), over a fresh route, under the same message id;
/// once the exit is back, exactly one email arrives.
#[test]
fn the_agent_sends_a_leak_again_when_no_receipt_comes() {
    use nix::sys::signal::Signal;

    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start(dir.path(), 4, true);
    // Hops of a second: the leak is still on its way when the exit stops.
    let sender = Sender::new(
        dir.path(),
        "sender",
        &fed.bootstrap(),
        &["--mixing-delay-ms", "1000"],
    );
    sender.fast_agent_config();
    sender.set_config_line(
        "retransmit_min_wait_secs = 20",
        "retransmit_min_wait_secs = 3",
    );
    sender.set_config_line("retransmit_spread_secs = 5", "retransmit_spread_secs = 1");
    sender.wait_for_directory(5, 1);
    let _agent = sender.start_agent();

    let out = sender.run(&[
        "send",
        "--json",
        "--to",
        "eve@example.com",
        "--as",
        "someone",
        "You were right about the budget, and I said nothing.",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = json_line(&out);
    let id = json
        .split(r#""message_id":""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    sender.wait_status(&["--json", &id], "the first attempt sent", |s| {
        s.contains(r#""attempts":1"#)
    });
    let exit = &mut fed.exit.as_mut().unwrap().process;
    exit.signal(Signal::SIGSTOP);
    let again = sender.wait_status(&["--json", &id], "a second attempt", |s| {
        s.contains(r#""attempts":2"#)
    });
    exit.signal(Signal::SIGCONT);
    assert!(again.contains(r#""outcome":"pending""#), "{again}");
    // Two attempts at least (a copy held up by the stopped exit may take
    // long enough for a third), one email; the ended leak is listed
    // without its id.
    sender.wait_status(&["--json"], "delivered, and listed without its id", |s| {
        s.contains(r#""outcome":"delivered""#) && !s.contains(&id)
    });
    assert_eq!(fed.emails_to("eve@example.com").len(), 1);
}
