//! What the tests of answers share: the exit's Postfix (LMTP to the
//! exit, and the recipient's mailbox), the delivered emails, and the
//! recipient answering through the exit's form in a real browser.

use std::path::Path;

use leak_node::exit::postfix_config;
use leak_tests::{mail::Postfix, process::free_port};

use super::{Federation, Sender};

/// A federation whose exit delivers through a real Postfix (which also
/// holds the recipient's mailbox, sam@example.test), takes answers by mail
/// (LMTP from that Postfix) and by its form (`http`).
pub struct Answerable {
    /// The exit's mail server and the recipient's provider.
    pub postfix: Postfix,
    /// Four relays and the exit, with metrics.
    pub fed: Federation,
    /// The exit's HTTP port (its answer form).
    pub http: u16,
    /// The exit's `--set` arguments beyond the harness's.
    pub exit_args: Vec<String>,
}

impl Answerable {
    pub fn start(dir: &Path) -> Self {
        let (lmtp, http) = (free_port(), free_port());
        let postfix = exit_mta(lmtp);
        let mut fed = Federation::start_with_metrics(dir, 4, false);
        let exit_args: Vec<String> = [
            "exit.transport=\"smtp\"".to_owned(),
            format!("exit.smtp_url={:?}", postfix.smtp_url()),
            format!("exit.inbound_listen=\"127.0.0.1:{lmtp}\""),
            format!("exit.http_listen=\"127.0.0.1:{http}\""),
        ]
        .into_iter()
        .flat_map(|setting| ["--set".to_owned(), setting])
        .collect();
        let args: Vec<&str> = exit_args.iter().map(String::as_str).collect();
        fed.start_exit_with(&args);
        Self {
            postfix,
            fed,
            http,
            exit_args,
        }
    }

    /// A sender of `fed` whose agent runs fast (short hops, frequent cover
    /// and fetches), once its directory lists every node.
    pub fn sender(dir: &Path, fed: &Federation) -> Sender {
        let sender = Sender::new(
            dir,
            "sender",
            &fed.bootstrap(),
            &["--mixing-delay-ms", "20"],
        );
        sender.fast_agent_config();
        sender.set_config_line("fetch_every_secs = 1800", "fetch_every_secs = 1");
        sender.wait_for_directory(5, 1);
        sender
    }
}

/// The exit's mail server, as `leak-node postfix-config` prints it: it
/// hands mail for leak.test to the exit's LMTP port. It also plays the
/// recipient's provider: sam@example.test is a local mailbox.
pub fn exit_mta(lmtp: u16) -> Postfix {
    let printed = postfix_config::render(
        "leak.test",
        "mail.leak.test",
        format!("127.0.0.1:{lmtp}").parse().unwrap(),
        "leak",
        "abuse",
    );
    Postfix::builder(&["example.test"])
        .mailboxes(&["sam"])
        .main_cf(&printed.main_cf)
        .main_cf(&format!(
            "mynetworks = 127.0.0.0/8\n\
             transport_maps = inline:{{leak.test=lmtp:inet:127.0.0.1:{lmtp}}}\n"
        ))
        .master_cf("smtp unix - - n - - smtp\nlmtp unix - - n - - lmtp")
        .start()
}

/// The emails delivered to sam@example.test, oldest first.
pub fn emails(postfix: &Postfix) -> Vec<String> {
    postfix
        .messages()
        .into_iter()
        .filter(|m| m.header("X-Original-To").as_deref() == Some("sam@example.test"))
        .map(|m| String::from_utf8(m.raw).unwrap())
        .collect()
}

/// The decoded text body and a header of a delivered email.
pub fn parsed(raw: &str) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a delivered email parses")
}

pub fn body(raw: &str) -> String {
    parsed(raw).body_text(0).unwrap().into_owned()
}

pub fn header_text(raw: &str, name: &str) -> String {
    parsed(raw)
        .header_raw(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .trim()
        .to_owned()
}

/// The first line of `body` after the line holding `marker`.
pub fn line_after(body: &str, marker: &str) -> String {
    let mut lines = body.lines();
    lines.find(|l| l.contains(marker)).expect(marker);
    lines.next().unwrap().trim().to_owned()
}

/// Runs the real-browser script against the answer form.
pub fn answer_in_browser(url: &str, text: &str, shots: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/answer_form.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(url)
        .arg(text)
        .arg("--screenshot")
        .arg(shots.join("answer-form.png"))
        .arg("--result-screenshot")
        .arg(shots.join("answer-sent.png"))
        .output()
        .expect("running the browser script (python3-selenium, chromium, chromium-driver)");
    assert!(
        out.status.success(),
        "the browser failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
