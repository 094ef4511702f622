//! The `leak` binary's arguments, messages and exit statuses, without a
//! federation: what a sender sees when something is wrong before any
//! packet leaves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

/// A peer id nobody listens as, on a port nobody listens on.
const DEAD_BOOTSTRAP: &str =
    "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGzHqThQN7U5zHQkdprBgB1XQhKexGEkCPAKRM3HqpwZC";

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_leak"));
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("LEAK_") || key == "EDITOR" || key == "VISUAL" {
                command.env_remove(key);
            }
        }
        command
            .env("LEAK_CONFIG", self.config())
            .env("LEAK_STATE_DIR", self.state())
            .env("HOME", self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `leak send --direct --to bob@example.com --as friend [EXTRA...] KIND`.
    fn send_direct(&self, extra: &[&str]) -> Output {
        let args = [
            &[
                "send",
                "--direct",
                "--to",
                "bob@example.com",
                "--as",
                "friend",
            ][..],
            extra,
            &[KIND],
        ]
        .concat();
        self.run(&args)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn init(&self, args: &[&str]) {
        let out = self.run(&[&["init"], args].concat());
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const KIND: &str = "I always admired how calmly you handle the Monday meetings.";
const THREAT: &str = "I will kill you";

#[test]
fn check_gives_the_verdict_and_its_exit_status() {
    let home = Home::new();
    let out = home.run(&["check", KIND]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Accepted"), "{}", stdout(&out));

    let out = home.run(&["check", THREAT]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("threat."), "{}", stdout(&out));

    let out = home.run(&["check", "--json", THREAT]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["verdict"], "refused");
    assert!(v["rule"].as_str().unwrap().starts_with("threat."));
    assert!(!v["reason"].as_str().unwrap().is_empty());

    // From standard input and from a file.
    let out = home.run_with_stdin(&["check"], THREAT);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let file = home.dir.path().join("m.txt");
    std::fs::write(&file, format!("{KIND}\r\n")).unwrap();
    let out = home.run(&["check", "--file", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Usage errors: nothing to check, both sources, too long.
    let out = home.run_with_stdin(&["check"], "  \n");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    let out = home.run(&["check", "x", "--file", file.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    let out = home.run(&["check", &"a".repeat(3000)]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("3000 bytes"), "{}", stderr(&out));
}

#[test]
fn send_usage_errors_are_clear_and_exit_2() {
    let home = Home::new();
    home.init(&[]);
    let cases: &[(&[&str], &str)] = &[
        (&["send", "--as", "friend", KIND], "--to"),
        (&["send", "--to", "bob@example.com", KIND], "--as"),
        (
            &["send", "--to", "bob@example.com", "--as", "boss", KIND],
            "coworker, friend, friend-of-a-friend, family or someone",
        ),
        (
            &["send", "--to", "bob", "--as", "friend", KIND],
            "local-part@domain",
        ),
        (
            &["send", "--to", "bob@[127.0.0.1]", "--as", "friend", KIND],
            "not an IP address",
        ),
        (
            &[
                "send",
                "--to",
                "bob@example.com",
                "--as",
                "friend",
                "--hops",
                "6",
                KIND,
            ],
            "--hops",
        ),
        (
            &[
                "send",
                "--to",
                "bob@example.com",
                "--as",
                "friend",
                "--hops",
                "1",
                KIND,
            ],
            "--hops",
        ),
        // No bootstrap node in the configuration.
        (
            &["send", "--to", "bob@example.com", "--as", "friend", KIND],
            "no bootstrap node configured",
        ),
    ];
    for (args, expected) in cases {
        let out = home.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: expected {expected:?} in {}",
            stderr(&out)
        );
    }
    // No message at all, no editor, standard input not a terminal but empty.
    let out = home.run(&["send", "--to", "bob@example.com", "--as", "friend"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
}

#[test]
fn send_without_a_config_says_to_run_init() {
    let home = Home::new();
    let out = home.run(&["send", "--to", "bob@example.com", "--as", "friend", KIND]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("leak init"), "{}", stderr(&out));
    let out = home.run(&["nodes"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn a_refused_text_is_stopped_before_the_network() {
    let home = Home::new();
    // A bootstrap node that does not exist: nothing may try to reach it.
    home.init(&["--bootstrap", DEAD_BOOTSTRAP]);
    let out = home.run(&[
        "send",
        "--to",
        "bob@example.com",
        "--as",
        "friend",
        "--json",
        THREAT,
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["outcome"], "refused");
    assert_eq!(v["attempts"], 0);
    assert!(v["rule"].as_str().unwrap().starts_with("threat."));
    assert!(stderr(&out).contains("Refused before sending"));
    assert!(!stderr(&out).contains("directory"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_bootstrap_fails_with_3() {
    let home = Home::new();
    home.init(&["--bootstrap", DEAD_BOOTSTRAP]);
    // Without directory authorities nothing is fetched: the user's to fix.
    let out = home.send_direct(&[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no directory authority configured"),
        "{}",
        stderr(&out)
    );
    home.init(&[
        "--force",
        "--bootstrap",
        DEAD_BOOTSTRAP,
        "--authority",
        &"ab".repeat(32),
    ]);
    // Without an agent, `leak send` refuses and says how to start one.
    let out = home.run(&["send", "--to", "bob@example.com", "--as", "friend", KIND]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no agent is running"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--direct"), "{}", stderr(&out));
    let out = home.send_direct(&[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no reachable bootstrap node"), "{err}");
    assert!(err.contains("connection refused"), "{err}");
    let out = home.send_direct(&["--json"]);
    assert_eq!(code(&out), 3);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["outcome"], "failed");
    assert!(v["message_id"].is_null());
    let out = home.run(&["nodes"]);
    assert_eq!(code(&out), 3);
    // Nothing was sent, so nothing is pending.
    let out = home.run(&["status"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("No leaks"), "{}", stdout(&out));
}

#[test]
fn init_writes_a_commented_config_and_a_private_state_dir() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = Home::new();
    home.init(&[
        "--bootstrap",
        DEAD_BOOTSTRAP,
        "--hops",
        "4",
        "--mixing-delay-ms",
        "0",
    ]);
    let text = std::fs::read_to_string(home.config()).unwrap();
    assert!(text.contains(DEAD_BOOTSTRAP));
    assert!(text.contains("hops = 4"));
    assert!(text.contains("mixing_delay_ms = 0"));
    assert!(text.lines().filter(|l| l.starts_with('#')).count() > 10);
    let mode = std::fs::metadata(home.state())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // Not overwritten without --force.
    let out = home.run(&["init"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--force"));
    home.init(&["--force"]);
    // A bootstrap address without /p2p/ is refused.
    let out = home.run(&["init", "--force", "--bootstrap", "/ip4/127.0.0.1/tcp/1"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("/p2p/"), "{}", stderr(&out));
    // A config with an unknown key names it.
    std::fs::write(home.config(), "[send]\nhopz = 3\n").unwrap();
    let out = home.run(&["send", "--to", "bob@example.com", "--as", "friend", KIND]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("hopz"), "{}", stderr(&out));
}

#[test]
fn status_of_an_unknown_leak_is_a_usage_error() {
    let home = Home::new();
    let out = home.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = home.run(&["status", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");
    let out = home.run(&["status", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no leak"), "{}", stderr(&out));
    let out = home.run(&["status", "not-an-id"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}
