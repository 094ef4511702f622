//! The sender's client `leak` against a federation of separate `leak-node`
//! processes on 127.0.0.1, as a sender and operators run them.
//!
//! The exit delivers with the file transport (one `.eml` file per email);
//! the binaries are found next to this test's executable (`leak-node`, or
//! `LEAK_NODE_BIN`; `leak`, or `LEAK_BIN`): build them first with
//! `cargo build --workspace --bins` (`scripts/test.sh` does).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use leak_tests::{NodeProcess, init_node, process::Started};
use libp2p::{Multiaddr, PeerId};

/// How long a node may take to print its addresses.
const START: Duration = Duration::from_secs(30);
/// How long the directory may take to list every node.
const CONVERGE: Duration = Duration::from_secs(60);

/// The `leak` binary: `$LEAK_BIN`, or `leak` beside `leak-node`.
fn leak_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LEAK_BIN") {
        return PathBuf::from(path);
    }
    let bin =
        leak_tests::leak_node_bin().with_file_name(format!("leak{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the leak binary is missing: {} does not exist. Build it first with \
         `cargo build --workspace --bins`, or set LEAK_BIN.",
        bin.display()
    );
    bin
}

/// A node process with what it printed at start.
struct Node {
    process: NodeProcess,
    started: Started,
}

/// Relays (the first is everyone's bootstrap node) and maybe an exit.
struct Federation {
    dir: PathBuf,
    relays: Vec<Node>,
    exit: Option<Node>,
}

impl Federation {
    fn start(dir: &Path, relays: usize, exit: bool) -> Self {
        let mut fed = Self {
            dir: dir.to_path_buf(),
            relays: Vec::new(),
            exit: None,
        };
        for i in 0..relays {
            let node = fed.start_node(&format!("relay-{i}"), &[], &[]);
            fed.relays.push(node);
        }
        if exit {
            fed.start_exit();
        }
        fed
    }

    fn bootstrap(&self) -> Multiaddr {
        self.relays[0].started.dial_addr()
    }

    fn start_node(&self, name: &str, init_args: &[&str], run_args: &[&str]) -> Node {
        let data = self.dir.join(name);
        let mut args = vec![
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--metrics",
            "",
            "--family",
            name,
        ];
        let bootstrap = self
            .relays
            .first()
            .map(|r| r.started.dial_addr().to_string());
        if let Some(b) = &bootstrap {
            args.extend(["--bootstrap", b.as_str()]);
        }
        args.extend(init_args);
        let config = init_node(&data, &args);
        let mut process = NodeProcess::run(name, &config, run_args, &[]);
        let started = process.wait_started(false, START);
        Node { process, started }
    }

    /// An exit for `leak.test` whose local rules also refuse pineapples.
    fn start_exit(&mut self) {
        let rules = self.dir.join("local-rules.toml");
        std::fs::write(
            &rules,
            format!(
                "{}\n[[rules]]\nname = \"local.pineapple\"\ncategory = \"spam\"\n\
                 reason = \"This exit does not deliver messages about pineapples.\"\n\
                 terms = [\"pineapple\"]\n",
                leak_protocol::policy::Policy::builtin().source()
            ),
        )
        .unwrap();
        let outbox = format!("exit.file_dir={:?}", self.outbox().display().to_string());
        let local = format!("exit.local_rules={:?}", rules.display().to_string());
        let exit = self.start_node(
            "exit",
            &["--exit-domain", "leak.test"],
            &[
                "--set",
                "exit.http_listen=\"127.0.0.1:0\"",
                "--set",
                &outbox,
                "--set",
                &local,
            ],
        );
        self.exit = Some(exit);
    }

    fn outbox(&self) -> PathBuf {
        self.dir.join("outbox")
    }

    /// The delivered emails, as text.
    fn emails(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.outbox()) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        out.sort();
        out
    }

    fn emails_to(&self, address: &str) -> Vec<String> {
        let to = format!("To: {address}");
        self.emails()
            .into_iter()
            .filter(|e| e.lines().any(|l| l == to))
            .collect()
    }

    fn relay_by_peer(&mut self, peer: &PeerId) -> Option<&mut Node> {
        self.relays.iter_mut().find(|r| &r.started.peer_id == peer)
    }
}

/// A sender: a config and a state directory of its own.
struct Sender {
    home: PathBuf,
}

impl Sender {
    fn new(dir: &Path, name: &str, bootstrap: &Multiaddr, init: &[&str]) -> Self {
        let sender = Self {
            home: dir.join(name),
        };
        let b = bootstrap.to_string();
        let out = sender.run(&[&["init", "--bootstrap", b.as_str()], init].concat());
        assert!(out.status.success(), "leak init: {}", stderr(&out));
        sender
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(leak_bin());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LEAK_") {
                command.env_remove(key);
            }
        }
        command
            .env("LEAK_CONFIG", self.home.join("config.toml"))
            .env("LEAK_STATE_DIR", self.home.join("state"))
            .env_remove("EDITOR")
            .env_remove("VISUAL")
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Waits until `leak nodes` lists `count` nodes, `exits` of them exits.
    fn wait_for_directory(&self, count: usize, exits: usize) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let out = self.run(&["nodes", "--json"]);
            let json = stdout(&out);
            let nodes = json.matches("\"peer_id\"").count();
            let exit_count = json.matches("\"domain\"").count();
            if out.status.success() && nodes == count && exit_count == exits {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the directory never listed {count} nodes ({exits} exits): {json}{}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks that `--json` printed exactly one JSON object, and returns it.
fn json_line(out: &Output) -> String {
    let text = stdout(out);
    let line = text.trim();
    assert!(
        line.starts_with('{') && line.ends_with('}') && !line.contains('\n'),
        "not one JSON object: {text:?}; stderr: {}",
        stderr(out)
    );
    line.to_owned()
}

/// A header's value in an email.
fn header<'a>(email: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    email.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// `POST path` with a form body to `addr`; returns the status line.
fn http_post(url: &str, body: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

/// The whole path of a leak through real processes: delivery with the
/// right headers and text and a `Delivered` receipt, `--json`, `status`;
/// a refusal by a stricter exit; an opted-out recipient; and a middle relay
/// killed while the leak is in flight, after which the client sends again
/// over another path and exactly one email arrives.
#[test]
fn leaks_through_a_federation_of_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start(dir.path(), 4, true);
    let sender = Sender::new(
        dir.path(),
        "sender",
        &fed.bootstrap(),
        &["--mixing-delay-ms", "20", "--receipt-timeout-secs", "20"],
    );
    sender.wait_for_directory(5, 1);

    // Delivered: one email, the right headers, the text; the receipt says so.
    let text = "I always admired how calmly you handle the Monday meetings.";
    let out = sender.run(&["send", "--to", "alice@example.com", "--as", "friend", text]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Delivered"), "{}", stdout(&out));
    let emails = fed.emails_to("alice@example.com");
    assert_eq!(emails.len(), 1, "{emails:?}");
    let email = &emails[0];
    assert_eq!(
        header(email, "Subject"),
        Some("From a friend, anonymously.")
    );
    assert_eq!(
        header(email, "From"),
        Some("\"A friend via Leak\" <leak@leak.test>")
    );
    assert!(email.contains(text), "{email}");
    assert!(header(email, "List-Unsubscribe").is_some());

    // --json: one object, parsed by its fields.
    let out = sender.run(&[
        "send",
        "--json",
        "--to",
        "bob@example.com",
        "--as",
        "coworker",
        "Your slides last week were the clearest I have seen.",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json = json_line(&out);
    assert!(json.contains(r#""outcome":"delivered""#), "{json}");
    assert!(json.contains(r#""attempts":1"#), "{json}");
    assert!(json.contains(r#""elapsed_ms":"#), "{json}");
    assert_eq!(fed.emails_to("bob@example.com").len(), 1);
    let out = sender.run(&["status", "--json"]);
    assert_eq!(stdout(&out).matches(r#""outcome":"delivered""#).count(), 2);

    // A text the client's policy accepts but this exit's local rules refuse.
    let out = sender.run(&[
        "send",
        "--json",
        "--to",
        "carol@example.com",
        "--as",
        "family",
        "I still think about the pineapple cake you made.",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json = json_line(&out);
    assert!(json.contains(r#""outcome":"refused""#), "{json}");
    assert!(json.contains(r#""rule":"local.pineapple""#), "{json}");
    assert!(fed.emails_to("carol@example.com").is_empty());

    // The recipient opts out with the email's one-click link; the next leak
    // to them is answered RecipientOptedOut and nothing arrives.
    let link = header(email, "List-Unsubscribe")
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();
    let status = http_post(&link, "List-Unsubscribe=One-Click");
    assert!(status.contains("200"), "{status}");
    let out = sender.run(&[
        "send",
        "--to",
        "alice@example.com",
        "--as",
        "friend",
        "One more thing I wanted to say.",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("RecipientOptedOut"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fed.emails_to("alice@example.com").len(), 1);

    // A middle relay dies while the leak is in flight. Hops hold packets
    // for about a second here, so the packet is still before or at the
    // middle relay when the test kills it on reading the route.
    let slow = Sender::new(
        dir.path(),
        "slow-sender",
        &fed.bootstrap(),
        &["--mixing-delay-ms", "1000", "--receipt-timeout-secs", "3"],
    );
    let mut child = slow
        .command(&[
            "send",
            "--verbose",
            "--json",
            "--to",
            "dave@example.com",
            "--as",
            "someone",
            "You were right about the budget, and I said nothing.",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let route = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("leak send ended without a route: {seen:?}"))
            .unwrap();
        seen.push(line.clone());
        if let Some(route) = line.split("attempt 1: route: ").nth(1) {
            break route.to_owned();
        }
    };
    let forward = route.split(" (exit)").next().unwrap();
    let hops: Vec<&str> = forward.split(" -> ").collect();
    assert_eq!(hops.len(), 3, "{route}");
    let middle: PeerId = hops[1].parse().unwrap();
    let node = fed
        .relay_by_peer(&middle)
        .unwrap_or_else(|| panic!("the middle {middle} is not a relay"));
    node.process.signal(nix::sys::signal::Signal::SIGKILL);
    // The rest of stderr, then the result.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let json = json_line(&out);
    assert_eq!(out.status.code(), Some(0), "{json} {seen:?} {rest:?}");
    assert!(json.contains(r#""outcome":"delivered""#), "{json}");
    assert!(
        rest.iter().any(|l| l.contains("attempt 2: route: ")),
        "sent again: {rest:?}"
    );
    let again = rest
        .iter()
        .find_map(|l| l.split("attempt 2: route: ").nth(1))
        .unwrap();
    assert!(
        !again
            .split(" (exit)")
            .next()
            .unwrap()
            .contains(&middle.to_string()),
        "the second path avoids the dead relay: {again}"
    );
    // Exactly one email, even after a while (a late first copy would show).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fed.emails_to("dave@example.com").len(), 1);
}

/// What a sender sees when the federation cannot carry a leak: no exit in
/// the directory, then too few nodes for the path rules. Both exit with 3.
#[test]
fn no_exit_and_too_few_nodes_are_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = Federation::start(dir.path(), 2, false);
    let sender = Sender::new(
        dir.path(),
        "sender",
        &fed.bootstrap(),
        &["--mixing-delay-ms", "0"],
    );
    sender.wait_for_directory(2, 0);
    let text = "Thank you for standing up for me in that meeting.";
    let out = sender.run(&["send", "--to", "erin@example.com", "--as", "coworker", text]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no exit in the directory"),
        "{}",
        stderr(&out)
    );
    let out = sender.run(&[
        "send",
        "--json",
        "--to",
        "erin@example.com",
        "--as",
        "coworker",
        text,
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(json_line(&out).contains(r#""outcome":"failed""#));

    // With an exit, two relays carry a 3-hop leak but not a 5-hop one.
    fed.start_exit();
    sender.wait_for_directory(3, 1);
    let out = sender.run(&[
        "send",
        "--hops",
        "5",
        "--to",
        "erin@example.com",
        "--as",
        "coworker",
        text,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not enough nodes for a 5-hop path"),
        "{}",
        stderr(&out)
    );
    assert!(fed.emails().is_empty());
    let out = sender.run(&["send", "--to", "erin@example.com", "--as", "coworker", text]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fed.emails_to("erin@example.com").len(), 1);
}
