//! `leak send` through five `leak-node` processes to a real Postfix that
//! delivers into a Maildir, and what each party knows afterwards: the
//! privacy audit of issue 5.
//!
//! Needs Debian's `postfix` package and root (see `leak_tests::mail`);
//! `scripts/test.sh` installs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use client_common::{Federation, Node, Sender, json_line, stderr};
use leak_tests::mail::Postfix;
use libp2p::{PeerId, identity::PublicKey};

/// The client's own loopback address: every connection `leak` opens
/// leaves from it (`leak init --bind`), so anything that recorded it
/// recorded the client.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);

/// Every byte a node said (its stdout and stderr) or holds (every file
/// under its data directory, read as bytes: the redb file, the identity,
/// the exit's queue directory), with where each part came from.
fn everything_of(node: &Node, data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("stdout".to_owned(), node.process.stdout().into_bytes()),
        ("stderr".to_owned(), node.process.stderr().into_bytes()),
    ];
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let name = path.strip_prefix(data_dir).unwrap_or(&path);
                out.push((name.display().to_string(), bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Named byte strings to look for.
struct Needles(Vec<(String, Vec<u8>)>);

impl Needles {
    /// `(needle, place)` for every needle found in `parts`.
    fn found_in(&self, parts: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (name, needle) in &self.0 {
            for (place, bytes) in parts {
                if contains(bytes, needle) {
                    found.push((name.clone(), place.clone()));
                }
            }
        }
        found
    }
}

/// The TCP sockets' remote IPv4 addresses of each process in `pids`, read
/// from the kernel (`/proc/net/tcp`, and `/proc/PID/fd` for which socket is
/// whose).
fn remote_ips(pids: &[u32]) -> Vec<BTreeSet<Ipv4Addr>> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return vec![BTreeSet::new(); pids.len()];
    };
    // inode -> remote address
    let mut remote: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(rem), Some(inode)) = (fields.get(2), fields.get(9)) else {
            continue;
        };
        let Some((ip, _port)) = rem.split_once(':') else {
            continue;
        };
        let Ok(raw) = u32::from_str_radix(ip, 16) else {
            continue;
        };
        // The kernel prints the address in network order read as a native u32.
        remote.insert((*inode).to_owned(), Ipv4Addr::from(raw.to_ne_bytes()));
    }
    pids.iter()
        .map(|pid| {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return BTreeSet::new();
            };
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
                    remote.get(inode).copied()
                })
                .collect()
        })
        .collect()
}

/// Samples [`remote_ips`] of `pids` every millisecond until stopped, and
/// gathers which processes ever had a connection from `ip`.
struct SocketWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<bool>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SocketWatch {
    fn start(pids: Vec<u32>, ip: Ipv4Addr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(vec![false; pids.len()]));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let ips = remote_ips(&pids);
                let mut seen = v.lock().unwrap();
                for (i, ips) in ips.iter().enumerate() {
                    seen[i] |= ips.contains(&ip);
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops sampling; for each process, whether it had a connection from the address.
    fn finish(mut self) -> Vec<bool> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// The run arguments that make a node log everything of its own at debug level.
const DEBUG: [&str; 2] = ["--set", "log.level=\"debug\""];

/// One leak, sent by a client on its own loopback address (127.0.0.77),
/// delivered by Postfix into a Maildir with the right headers and text,
/// reported `Delivered` in `--json`. Then the privacy audit over four
/// relays and one exit logging at debug level: every byte each node printed
/// and every file under its data directory are searched for what
/// identifies the client (its address, its peer id as text and as bytes,
/// its public key) and for the leak (recipient, text). No node holds both;
/// no relay holds anything of the leak; the exit never saw the client and
/// holds nothing of the leak once it is delivered; the email holds nothing
/// about the client. The kernel's socket table, sampled while the client
/// runs, shows which nodes the client's connections reached and that
/// they came from 127.0.0.77.
#[test]
fn a_leak_through_postfix_and_what_each_node_knows() {
    let postfix = Postfix::start("example.org");
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation {
        dir: dir.path().to_path_buf(),
        relays: Vec::new(),
        exit: None,
        metrics: false,
    };
    for i in 0..4 {
        let relay = fed.start_node(&format!("relay-{i}"), &[], &DEBUG);
        fed.relays.push(relay);
    }
    let smtp = format!("exit.smtp_url={:?}", postfix.smtp_url());
    fed.start_exit_with(&[
        "--set",
        "exit.transport=\"smtp\"",
        "--set",
        &smtp,
        DEBUG[0],
        DEBUG[1],
    ]);
    let names: Vec<String> = (0..4)
        .map(|i| format!("relay-{i}"))
        .chain(["exit".to_owned()])
        .collect();
    let pids: Vec<u32> = fed
        .relays
        .iter()
        .chain(fed.exit.as_ref())
        .map(|n| n.process.pid())
        .collect();
    let data_dirs: Vec<PathBuf> = names.iter().map(|n| fed.dir.join(n)).collect();

    let watch = SocketWatch::start(pids.clone(), CLIENT_IP);
    let client_ip = CLIENT_IP.to_string();
    let sender = Sender::new(
        dir.path(),
        "sender",
        &fed.bootstrap(),
        &["--mixing-delay-ms", "20", "--bind", &client_ip],
    );
    sender.wait_for_directory(5, 1);

    let recipient = "frank.quietly@example.org";
    let text = "Your garden is the loveliest on our street; I never told you.";
    let out = sender.run(&[
        "send",
        "--direct",
        "--verbose",
        "--json",
        "--to",
        recipient,
        "--as",
        "friend-of-a-friend",
        text,
    ]);
    let reached = watch.finish();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = json_line(&out);
    // No inbound mail here: the exit knows only that its mail server took it.
    assert!(json.contains(r#""outcome":"accepted""#), "{json}");
    let client: PeerId = stderr(&out)
        .lines()
        .find_map(|l| l.split("client peer id: ").nth(1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let messages = postfix.wait_for_messages(1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let messages_later = postfix.messages();
    assert_eq!(messages_later.len(), 1, "exactly one email");
    let mail = &messages[0];
    assert_eq!(
        mail.subject().as_deref(),
        Some("From a friend of a friend, anonymously.")
    );
    assert!(
        mail.header("To").unwrap().contains(recipient),
        "{}",
        mail.text()
    );
    assert!(
        mail.header("From").unwrap().contains("leak@leak.test"),
        "{}",
        mail.text()
    );
    assert!(mail.body_text().contains(text), "{}", mail.text());

    // The client's connections came from 127.0.0.77 as the nodes see them
    // (the remote address of the nodes' own sockets), and never reached the
    // exit: the bootstrap node (directory, fetched by `leak nodes` before;
    // the send took it from the cache and asked nobody) and the entry relay
    // (packet, mailbox) are the only ones that could know its address.
    let reached_names: Vec<&str> = names
        .iter()
        .zip(&reached)
        .filter(|(_, r)| **r)
        .map(|(n, _)| n.as_str())
        .collect();
    eprintln!("nodes with a connection from {CLIENT_IP}: {reached_names:?}");
    assert!(
        !reached_names.is_empty(),
        "no node saw {CLIENT_IP}: not even the entry relay"
    );
    assert!(
        reached_names.len() <= 2,
        "more nodes than the bootstrap and the entry relay saw the client: {reached_names:?}"
    );
    assert!(!reached[4], "the client connected to the exit");
    assert!(
        stderr(&out).contains("using the directory fetched"),
        "the send fetched the directory again:\n{}",
        stderr(&out)
    );

    // The audit.
    let key = PublicKey::try_decode_protobuf(client.as_ref().digest())
        .unwrap()
        .try_into_ed25519()
        .unwrap()
        .to_bytes();
    let client_needles = Needles(vec![
        ("client address".into(), client_ip.clone().into_bytes()),
        // /ip4/127.0.0.77 as a binary multiaddr
        (
            "client address (multiaddr bytes)".into(),
            [&[4u8][..], &CLIENT_IP.octets()].concat(),
        ),
        ("client peer id".into(), client.to_string().into_bytes()),
        ("client peer id (bytes)".into(), client.to_bytes()),
        ("client public key (bytes)".into(), key.to_vec()),
        ("client public key (hex)".into(), hex(&key).into_bytes()),
    ]);
    // The message id the sender's client chose (and showed): the exit
    // keys its records by a value of its own and never logs it.
    let message_id = json
        .split(r#""message_id":""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let message_id_bytes: Vec<u8> = (0..message_id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&message_id[i..i + 2], 16).unwrap())
        .collect();
    let leak_needles = Needles(vec![
        ("message id".into(), message_id.clone().into_bytes()),
        ("message id (bytes)".into(), message_id_bytes.clone()),
        ("recipient".into(), recipient.as_bytes().to_vec()),
        ("recipient's local part".into(), b"frank.quietly".to_vec()),
        ("text".into(), text.as_bytes().to_vec()),
        (
            "a part of the text".into(),
            b"loveliest on our street".to_vec(),
        ),
    ]);
    assert!(
        !leak_needles
            .found_in(&[("email".into(), mail.raw.clone())])
            .is_empty(),
        "the detector finds the leak where it is"
    );
    let mut report = Vec::new();
    let mut violations = Vec::new();
    for (i, (name, data_dir)) in names.iter().zip(&data_dirs).enumerate() {
        let node = if i < 4 {
            &fed.relays[i]
        } else {
            fed.exit.as_ref().unwrap()
        };
        let parts = everything_of(node, data_dir);
        let who = client_needles.found_in(&parts);
        let what = leak_needles.found_in(&parts);
        let log_lines = parts[..2]
            .iter()
            .map(|(_, b)| b.split(|&c| c == b'\n').count())
            .sum::<usize>();
        let files: Vec<String> = parts[2..]
            .iter()
            .map(|(p, b)| format!("{p} ({} B)", b.len()))
            .collect();
        report.push(format!(
            "{name}: {log_lines} log lines, files {files:?}: client identifiers {who:?}; leak items {what:?}"
        ));
        if std::env::var_os("LEAK_AUDIT_DUMP").is_some() {
            eprintln!("--- {name} stderr ---\n{}", node.process.stderr());
        }
        if !who.is_empty() && !what.is_empty() {
            violations.push(format!("{name} holds both {who:?} and {what:?}"));
        }
        if i < 4 && !what.is_empty() {
            violations.push(format!("{name} (a relay) holds {what:?}"));
        }
        if i == 4 {
            if !who.is_empty() {
                violations.push(format!("the exit holds {who:?}"));
            }
            if !what.is_empty() {
                violations.push(format!("the exit still holds {what:?} after delivery"));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(violations.is_empty(), "{}", violations.join("\n"));

    // The leak ended (delivered): the sender's state directory keeps its
    // outcome, not its id.
    let mut state_files = Vec::new();
    let mut dirs = vec![sender.home.join("state")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.extend(path.file_name().unwrap().as_encoded_bytes());
                state_files.push((path.display().to_string(), bytes));
            }
        }
    }
    let id_needles = Needles(vec![
        ("message id".into(), message_id.into_bytes()),
        ("message id (bytes)".into(), message_id_bytes),
    ]);
    let kept = id_needles.found_in(&state_files);
    assert!(kept.is_empty(), "the sender's state keeps {kept:?}");

    let in_email = client_needles.found_in(&[
        ("headers".into(), mail.header_bytes().to_vec()),
        ("body".into(), mail.body_bytes().to_vec()),
        ("raw".into(), mail.raw.clone()),
    ]);
    assert!(
        in_email.is_empty(),
        "the email holds {in_email:?}:\n{}",
        mail.text()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
