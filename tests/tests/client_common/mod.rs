//! Shared by the `client_*` tests: a federation of `leak-node` processes
//! on 127.0.0.1 and senders running the `leak` binary, each with a config
//! and a state directory of its own.
//!
//! The binaries are found next to the test's executable (`leak-node`, or
//! `LEAK_NODE_BIN`; `leak`, or `LEAK_BIN`): build them first with
//! `cargo build --workspace --bins` (`scripts/test.sh` does).

#![allow(dead_code)]

pub mod answers;

use std::{
    io::{Read as _, Write as _},
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
pub fn leak_bin() -> PathBuf {
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
pub struct Node {
    pub process: NodeProcess,
    pub started: Started,
}

/// Relays (the first is everyone's bootstrap node) and maybe an exit.
pub struct Federation {
    pub dir: PathBuf,
    pub relays: Vec<Node>,
    pub exit: Option<Node>,
    /// Whether nodes serve their metrics (on a free loopback port).
    pub metrics: bool,
}

impl Federation {
    pub fn start(dir: &Path, relays: usize, exit: bool) -> Self {
        Self::start_with(dir, relays, exit, false)
    }

    /// As [`Self::start`], every node serving its metrics.
    pub fn start_with_metrics(dir: &Path, relays: usize, exit: bool) -> Self {
        Self::start_with(dir, relays, exit, true)
    }

    fn start_with(dir: &Path, relays: usize, exit: bool, metrics: bool) -> Self {
        let mut fed = Self {
            dir: dir.to_path_buf(),
            relays: Vec::new(),
            exit: None,
            metrics,
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

    pub fn bootstrap(&self) -> Multiaddr {
        self.relays[0].started.dial_addr()
    }

    pub fn start_node(&self, name: &str, init_args: &[&str], run_args: &[&str]) -> Node {
        let data = self.dir.join(name);
        let metrics = if self.metrics { "127.0.0.1:0" } else { "" };
        let mut args = vec![
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--metrics",
            metrics,
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
        let started = process.wait_started(self.metrics, START);
        Node { process, started }
    }

    /// An exit for `leak.test` delivering into [`Self::outbox`], whose
    /// local rules also refuse pineapples.
    pub fn start_exit(&mut self) {
        let outbox = format!("exit.file_dir={:?}", self.outbox().display().to_string());
        self.start_exit_with(&["--set", &outbox]);
    }

    /// An exit for `leak.test` run with `run_args` (`--set exit.…`), whose
    /// local rules also refuse pineapples.
    pub fn start_exit_with(&mut self, run_args: &[&str]) {
        let exit = self.start_named_exit("exit", run_args);
        self.exit = Some(exit);
    }

    /// Another exit for `leak.test` (data directory `name`) delivering
    /// into [`Self::outbox`] too, as [`Self::start_exit`] makes one.
    pub fn start_another_exit(&self, name: &str) -> Node {
        let outbox = format!("exit.file_dir={:?}", self.outbox().display().to_string());
        self.start_named_exit(name, &["--set", &outbox])
    }

    fn start_named_exit(&self, name: &str, run_args: &[&str]) -> Node {
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
        let local = format!("exit.local_rules={:?}", rules.display().to_string());
        // Receipts leave after the exit hop's delay only: tests wait for them.
        let mut args = vec![
            "--set",
            "exit.http_listen=\"127.0.0.1:0\"",
            "--set",
            "exit.inbound_listen=\"\"",
            "--set",
            "exit.dns_resolver=\"off\"",
            "--set",
            "exit.receipt_delay_ms=0",
            "--set",
            &local,
        ];
        args.extend(run_args);
        self.start_node(name, &["--exit-domain", "leak.test"], &args)
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.join("outbox")
    }

    /// The delivered emails, as text.
    pub fn emails(&self) -> Vec<String> {
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

    pub fn emails_to(&self, address: &str) -> Vec<String> {
        let to = format!("To: {address}");
        self.emails()
            .into_iter()
            .filter(|e| e.lines().any(|l| l == to))
            .collect()
    }

    pub fn relay_by_peer(&mut self, peer: &PeerId) -> Option<&mut Node> {
        self.relays.iter_mut().find(|r| &r.started.peer_id == peer)
    }
}

/// A sender: a config and a state directory of its own.
pub struct Sender {
    pub home: PathBuf,
}

impl Sender {
    pub fn new(dir: &Path, name: &str, bootstrap: &Multiaddr, init: &[&str]) -> Self {
        let sender = Self {
            home: dir.join(name),
        };
        let b = bootstrap.to_string();
        let authority = leak_tests::test_authority();
        let out = sender.run(
            &[
                &["init", "--bootstrap", b.as_str(), "--authority", &authority],
                init,
            ]
            .concat(),
        );
        assert!(out.status.success(), "leak init: {}", stderr(&out));
        sender
    }

    /// A sender of `fed` with 20 ms hops and a fast agent
    /// ([`Self::fast_agent_config`]), once its directory lists the
    /// federation's four relays and exit.
    pub fn fast(dir: &Path, fed: &Federation) -> Self {
        let sender = Self::new(
            dir,
            "sender",
            &fed.bootstrap(),
            &["--mixing-delay-ms", "20"],
        );
        sender.fast_agent_config();
        sender.wait_for_directory(5, 1);
        sender
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(leak_bin());
        // The outbox key in /dev/shm, as the tests expect, whatever the
        // developer's session sets.
        command.env_remove("XDG_RUNTIME_DIR");
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

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Replaces one line of the config file (`key = value`, as `leak init`
    /// wrote it) with another.
    pub fn set_config_line(&self, line: &str, replacement: &str) {
        let path = self.home.join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in {}",
            path.display()
        );
        let text = text
            .lines()
            .map(|l| if l == line { replacement } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, text + "\n").unwrap();
    }

    /// Short cover intervals, retransmission waits and directory refreshes
    /// for tests (which never assert on wall-clock time).
    pub fn fast_agent_config(&self) {
        self.set_config_line("send_interval_ms = 9000", "send_interval_ms = 150");
        self.set_config_line("poll_interval_ms = 20000", "poll_interval_ms = 150");
        self.set_config_line(
            "retransmit_min_wait_secs = 3600",
            "retransmit_min_wait_secs = 20",
        );
        self.set_config_line(
            "retransmit_spread_secs = 10800",
            "retransmit_spread_secs = 5",
        );
        // One agent alone would otherwise have its hops lengthened to the
        // longest delay relays accept, once nodes publish traffic counts.
        self.set_config_line("min_anonymity_set = 20", "min_anonymity_set = 0");
        // Any free port for the web page: tests run agents side by side.
        self.set_config_line("listen = \"127.0.0.1:7390\"", "listen = \"127.0.0.1:0\"");
    }

    /// Starts `leak agent` and waits until `leak status` shows it running
    /// with a guard.
    pub fn start_agent(&self) -> AgentProcess {
        // Its log goes to a file: a pipe nobody reads would fill and stop it.
        let log = self.home.join("agent.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = self
            .command(&["agent"])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut agent = AgentProcess {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + CONVERGE;
        loop {
            let out = self.run(&["status"]);
            if stdout(&out).contains("Agent: running") && !stdout(&out).contains("not chosen yet") {
                return agent;
            }
            if let Some(status) = agent.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("leak agent exited ({status}): {}", agent.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "the agent never got a guard: {}{}",
                stdout(&out),
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `leak status` until `pred` holds for its output; panics after a minute.
    pub fn wait_status(&self, args: &[&str], what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let out = self.run(&[&["status"], args].concat());
            let text = stdout(&out);
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "never {what}: {text}{}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `leak nodes` lists `count` nodes, `exits` of them exits.
    pub fn wait_for_directory(&self, count: usize, exits: usize) {
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

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks that `--json` printed exactly one JSON object, and returns it.
pub fn json_line(out: &Output) -> String {
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
pub fn header<'a>(email: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    email.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// `POST path` with a form body to `addr`; returns the status line.
pub fn http_post(url: &str, body: &str) -> String {
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

/// A running `leak agent`; killed (SIGKILL) when dropped.
pub struct AgentProcess {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl AgentProcess {
    /// Kills it at once (SIGKILL: no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (a minute at most) until it exits by itself, after `leak
    /// agent stop`, and reaps it.
    pub fn wait_exit(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the agent did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = None;
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// What it wrote on standard error so far (every run of this sender).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
