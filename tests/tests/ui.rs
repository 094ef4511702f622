//! The sender's web page end to end: `leak-node` processes, a real
//! Postfix delivering the email, the sender's `leak agent` serving its page
//! on 127.0.0.1, and a real browser (headless Chromium, driven by
//! `tests/browser/ui.py`) using it as a person would.
//!
//! In the browser: the page is usable by keyboard, labelled, fits a narrow
//! screen; a bad address and a refused text are explained, and a refused
//! text sent anyway is refused with its reason at the message field; a leak
//! sent from the page is seen `Delivered`; the recipient's answer appears in
//! the conversation; a page of another origin in the same browser can
//! neither send nor read; nothing is loaded from outside; `leak ui`'s
//! forwarding file opens the page, which removes it. From here: a
//! DNS-rebinding request (another `Host`) is refused by the agent itself,
//! and the agent queued exactly the one leak the page sent.
//!
//! `LEAK_UI_SCREENSHOTS=DIR` keeps the screenshots (compose, receipt,
//! thread) in DIR: the README's come from
//! `LEAK_UI_SCREENSHOTS=client/ui/screenshots cargo test -p leak-tests --test ui`.
//!
//! Needs Postfix, Chromium, chromedriver and python3-selenium (Debian
//! packages `scripts/test.sh` installs) and root for Postfix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use client_common::{
    answers::{Answerable, body, emails, line_after},
    http_post, stdout,
};

const TEXT: &str =
    "Your talk on Tuesday was the bravest thing I have seen at work. I never told you.";
const REFUSED: &str = "Read what they wrote about you on example.com";
const ANSWER: &str = "Thank you. It means a lot. Who are you?";

/// One raw HTTP/1.1 GET with the given `Host`: the status code.
fn get_with_host(port: u16, path: &str, host: &str, token: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Leak-Token: {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn screenshots(dir: &Path) -> PathBuf {
    match std::env::var_os("LEAK_UI_SCREENSHOTS") {
        Some(kept) => {
            let kept = PathBuf::from(kept);
            let kept = if kept.is_relative() {
                // Relative to the workspace, where the command is typed.
                Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(kept)
            } else {
                kept
            };
            std::fs::create_dir_all(&kept).unwrap();
            kept
        }
        None => {
            let shots = dir.join("screenshots");
            std::fs::create_dir_all(&shots).unwrap();
            shots
        }
    }
}

#[test]
fn a_person_writes_sends_and_reads_the_answer_in_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let Answerable { postfix, fed, .. } = Answerable::start(dir.path());
    let sender = Answerable::sender(dir.path(), &fed);
    let mut agent = sender.start_agent();

    // `leak ui --print`: the page's address with this run's key.
    let out = sender.run(&["ui", "--print"]);
    assert!(out.status.success(), "{out:?}");
    let url = stdout(&out).trim().to_owned();
    let (origin, token) = url.split_once("/#token=").unwrap();
    assert!(origin.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(token.len(), 64);
    let port: u16 = origin.rsplit(':').next().unwrap().parse().unwrap();
    // DNS rebinding: a page of another name that resolves to 127.0.0.1
    // sends its own name as Host, and is refused whatever it holds.
    assert_eq!(
        get_with_host(port, "/api/threads", &format!("127.0.0.1:{port}"), token),
        200
    );
    for host in [format!("rebind.example:{port}"), "127.0.0.1".to_owned()] {
        assert_eq!(
            get_with_host(port, "/api/threads", &host, token),
            403,
            "{host}"
        );
        assert_eq!(get_with_host(port, "/", &host, ""), 403, "{host}");
    }

    let shots = screenshots(dir.path());
    let opener = sender.home.join("state").join("ui-open.html");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/ui.py");
    let mut browser = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(["--url", &url, "--recipient", "sam@example.test"])
        .args([
            "--refused-text",
            REFUSED,
            "--text",
            TEXT,
            "--answer-text",
            ANSWER,
        ])
        .arg("--opener")
        .arg(&opener)
        .arg("--screenshots")
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the browser script (python3-selenium, chromium, chromium-driver)");
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut next_phase = |want: &str, browser: &mut std::process::Child| -> serde_json::Value {
        match lines.next() {
            Some(Ok(line)) => {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(value["phase"], want, "{value}");
                value
            }
            _ => {
                let _ = browser.wait();
                let mut err = String::new();
                browser
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("the browser script stopped before {want}: {err}");
            }
        }
    };

    // Delivered, as the page said: the email is in the mailbox.
    let delivered = next_phase("delivered", &mut browser);
    assert!(
        delivered["receipt_words"]
            .as_str()
            .unwrap()
            .starts_with("Delivered"),
        "{delivered}"
    );
    let email = emails(&postfix)
        .into_iter()
        .find(|e| body(e).starts_with("Your talk on Tuesday"))
        .expect("the email in the recipient's mailbox");
    // The recipient answers through the exit's form.
    let answer_url = line_after(&body(&email), "use this page:");
    let posted = http_post(
        &answer_url,
        &format!("text={}", ANSWER.replace(' ', "+").replace('?', "%3F")),
    );
    assert!(posted.contains(" 200 "), "{posted}");
    let stdin = browser.stdin.as_mut().unwrap();
    stdin.write_all(b"answered\n").unwrap();
    stdin.flush().unwrap();

    // Without a display, `leak ui` prints the address and leaves the
    // private file a browser would have been given.
    let out = sender.run(&["ui"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&url), "{}", stdout(&out));
    let mode = std::fs::metadata(&opener).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    assert!(std::fs::read_to_string(&opener).unwrap().contains(&url));

    // The tab already open kept calling the agent with the key all along
    // (conversations, the other origin, forgetting): the file is still
    // there for the browser `leak ui` would have started. That browser
    // opens it, the page loads from it and calls the agent: the file that
    // held the key is gone.
    next_phase("open-file", &mut browser);
    assert!(opener.exists());
    let stdin = browser.stdin.as_mut().unwrap();
    stdin.write_all(b"opened\n").unwrap();
    stdin.flush().unwrap();
    next_phase("opened-from-file", &mut browser);
    assert!(!opener.exists());
    // `leak ui` once more: the file is there until the agent stops.
    let out = sender.run(&["ui"]);
    assert!(out.status.success(), "{out:?}");
    assert!(opener.exists());

    // The agent stops (`leak agent stop`): its key is void, the file that
    // held it is gone, and the page says the agent is not running.
    next_phase("stop-agent", &mut browser);
    let out = sender.run(&["agent", "stop"]);
    assert!(out.status.success(), "{out:?}");
    agent.wait_exit();
    assert!(!opener.exists());
    let stdin = browser.stdin.as_mut().unwrap();
    stdin.write_all(b"stopped\n").unwrap();
    stdin.flush().unwrap();

    let done = next_phase("done", &mut browser);
    eprintln!("the browser saw: {done}");
    assert!(browser.wait().unwrap().success());
    let s = |key: &str| done[key].as_str().unwrap_or_default().to_owned();

    // Made for people.
    assert_eq!(done["unlabelled"], serde_json::json!([]), "{done}");
    assert_eq!(s("lang"), "en");
    assert_eq!(done["tab_reaches_send"], true, "{done}");
    assert_eq!(done["narrow_overflow"], false, "{done}");
    assert!(
        s("bad_address_error").to_lowercase().contains("address"),
        "{done}"
    );
    assert_eq!(done["bad_address_invalid"], "true");
    assert!(s("refused_verdict").starts_with("Refused"), "{done}");
    assert!(
        s("refused_verdict").to_lowercase().contains("link"),
        "{done}"
    );
    assert!(
        s("bytes_text").contains(&REFUSED.len().to_string()),
        "{done}"
    );
    // Sent anyway: refused with its reason, at the message field (its
    // verdict under it, the error tied to it, the focus on it), the text
    // kept, nothing queued (the agent's log below counts one leak).
    assert!(
        s("refused_send_error").contains("refuses this text")
            && s("refused_send_error").to_lowercase().contains("link"),
        "{done}"
    );
    assert!(s("refused_send_verdict").starts_with("Refused"), "{done}");
    assert_eq!(done["refused_send_invalid"], "true", "{done}");
    assert!(
        s("refused_send_described")
            .split(' ')
            .any(|id| id == "compose-error"),
        "{done}"
    );
    assert_eq!(done["refused_send_focus"], "message", "{done}");
    assert_eq!(done["refused_send_progress"], false, "{done}");
    assert_eq!(done["refused_send_kept"], true, "{done}");
    // The forwarding file opened the page, with its key.
    let opened = &done["opened_from_file"];
    assert_eq!(opened["state"], true, "{done}");
    assert_eq!(opened["no_token"], false, "{done}");
    assert_eq!(opened["url"], format!("{origin}/"), "{done}");
    assert!(!s("queued_words").is_empty());
    assert_eq!(done["answer_seen"], true, "{done}");
    // Forgotten from the page: gone from this machine.
    assert_eq!(done["forgot_thread"], true, "{done}");
    let out = sender.run(&["inbox", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]", "{out:?}");
    assert_eq!(done["thread_count"], 1);
    assert!(done["sent_rows"].as_u64().unwrap() >= 1, "{done}");
    assert!(
        !s("anonymity_text").is_empty() && s("cost_text").contains("MB"),
        "{done}"
    );
    // WCAG 2.2 AA, in both colour schemes: text contrast, target sizes,
    // visible focus. Each was measured on something, not only found empty.
    assert_eq!(
        done["color_schemes"],
        serde_json::json!(["light", "dark"]),
        "{done}"
    );
    assert_eq!(done["contrast_failures"], serde_json::json!([]), "{done}");
    assert!(done["contrast_checked"].as_u64().unwrap() > 20, "{done}");
    assert_eq!(done["small_targets"], serde_json::json!([]), "{done}");
    assert!(done["targets_checked"].as_u64().unwrap() > 20, "{done}");
    assert_eq!(done["no_focus_indicator"], serde_json::json!([]), "{done}");
    assert!(done["focus_checked"].as_u64().unwrap() > 10, "{done}");

    // Safe on a person's machine.
    assert_eq!(done["external"], serde_json::json!([]), "{done}");
    assert_eq!(done["blocked"], serde_json::json!([]), "{done}");
    assert_eq!(done["console_errors"], serde_json::json!([]), "{done}");
    assert!(s("csp").contains("default-src 'none'"), "{done}");
    let other = &done["other_origin"];
    assert_eq!(done["other_origin_read_threads"], false, "{done}");
    for call in ["b", "c"] {
        assert!(
            other[call].as_str().unwrap_or("error").starts_with("error"),
            "{call}: {done}"
        );
    }
    assert_eq!(done["sent_rows_after"], done["sent_rows"], "{done}");
    // The agent queued exactly the one leak the page sent: the other
    // origin's attempts never reached it.
    let log = agent.stderr();
    assert_eq!(log.matches("a leak was queued").count(), 1, "{log}");
    assert_eq!(emails(&postfix).len(), 1);
    drop(fed);
}
