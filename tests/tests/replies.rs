//! Replies end to end: `leak-node` processes, a real Postfix in front of
//! the exit's inbound mail (LMTP, as `leak-node postfix-config` prints
//! it), the sender's `leak agent`, real HTTP and a real browser.
//!
//! A leak is delivered; the recipient answers through the form (headless
//! Chromium) and by pressing Reply (mail through Postfix, quoted text and
//! an attachment in it); the agent fetches both and `leak inbox` shows
//! them; a follow-up threads under the first email; an answer stored
//! while the agent is stopped survives an exit restart; forged tokens, a
//! refused answer and an answer to an ended conversation change nothing;
//! no answer's text is on the exit's disk in the clear.
//!
//! Needs Postfix, Chromium, chromedriver and python3-selenium (Debian
//! packages `scripts/test.sh` installs) and root for Postfix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use client_common::{
    Federation, Sender,
    answers::{Answerable, answer_in_browser, body, emails, header_text, line_after},
    json_line, stderr,
};
use leak_tests::{
    mail::Postfix,
    process::{NodeProcess, metric, scrape_metrics},
};
use lettre::{Transport as _, address::Envelope};

const CONVERGE: Duration = Duration::from_secs(90);

/// The exit's answer counter for `result`.
fn answers(fed: &Federation, result: &str) -> f64 {
    let addr = fed.exit.as_ref().unwrap().started.metrics_addr();
    let text = scrape_metrics(addr).unwrap();
    metric(
        &text,
        "leak_exit_answers_total",
        Some(&format!("result=\"{result}\"")),
    )
}

/// `leak inbox --json` until `pred` holds.
fn wait_inbox(
    sender: &Sender,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let out = sender.run(&["inbox", "--json"]);
        assert!(out.status.success(), "leak inbox: {}", stderr(&out));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if pred(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "never {what}: {value}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn answer_count(inbox: &serde_json::Value) -> usize {
    inbox[0]["answers"].as_array().map_or(0, Vec::len)
}

/// An answer as a mail program sends it: the person's words above the
/// quoted message and a signature, with a photo attached.
fn emailed_answer(reply_to: &str, in_reply_to: &str) -> String {
    format!(
        "From: Sam <sam@example.test>\r\nTo: {reply_to}\r\nSubject: Re: From a friend, anonymously.\r\n\
         In-Reply-To: {in_reply_to}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         I remember that winter too. Write to me at sam@example.test if you like.\r\n\r\n\
         --\r\nSam\r\n\r\n\
         On Sun, 6 Dec 2026 at 10:00, A friend via Leak <leak@leak.test> wrote:\r\n\
         > I never said thank you for that winter.\r\n\r\n\
         --b\r\nContent-Type: image/jpeg; name=\"winter.jpg\"\r\n\
         Content-Disposition: attachment; filename=\"winter.jpg\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQSkZJRgABAQAAAQABAAD/\r\n--b--\r\n"
    )
}

fn send_to(postfix: &Postfix, to: &str, message: &str) {
    let transport = lettre::SmtpTransport::builder_dangerous("127.0.0.1")
        .port(postfix.port())
        .build();
    let envelope = Envelope::new(
        Some("sam@example.test".parse().unwrap()),
        vec![to.parse().unwrap()],
    )
    .unwrap();
    transport
        .send_raw(&envelope, message.as_bytes())
        .unwrap_or_else(|e| panic!("Postfix refused mail to {to}: {e}\n{}", postfix.log()));
}

/// Every file under `dir`, read as bytes.
fn any_file_holds(dir: &Path, needle: &[u8]) -> Option<String> {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = any_file_holds(&path, needle) {
                return Some(found);
            }
        } else if std::fs::read(&path)
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            return Some(path.display().to_string());
        }
    }
    None
}

#[test]
fn a_recipient_answers_by_form_and_by_mail_and_the_sender_reads_both() {
    let dir = tempfile::tempdir().unwrap();
    let Answerable {
        postfix,
        mut fed,
        http,
        exit_args,
    } = Answerable::start(dir.path());
    let exit_args: Vec<&str> = exit_args.iter().map(String::as_str).collect();

    let sender = Answerable::sender(dir.path(), &fed);
    let mut agent = sender.start_agent();

    // A leak, delivered; its email can be answered.
    let out = sender.run(&[
        "send",
        "--to",
        "sam@example.test",
        "--as",
        "friend",
        "--wait",
        "--json",
        "I never said thank you for that winter. Thank you.",
    ]);
    assert!(
        json_line(&out).contains("\"outcome\":\"delivered\""),
        "{}",
        stderr(&out)
    );
    let sent: serde_json::Value = serde_json::from_str(&json_line(&out)).unwrap();
    let first = emails(&postfix).pop().unwrap();
    let text = body(&first);
    let answer_url = line_after(&text, "use this page:");
    let end_url = line_after(&text, "End this conversation");
    assert!(answer_url.starts_with(&format!("http://127.0.0.1:{http}/answer/")));
    let reply_to = header_text(&first, "Reply-To");
    let reply_to = reply_to
        .rsplit_once('<')
        .map_or(reply_to.as_str(), |(_, a)| a.trim_end_matches('>'))
        .to_owned();
    assert!(
        reply_to.starts_with("a-") && reply_to.ends_with("@leak.test"),
        "{reply_to}"
    );
    let first_id = header_text(&first, "Message-ID");
    let inbox = wait_inbox(&sender, "a conversation", |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    });
    let label = inbox[0]["label"].as_str().unwrap().to_owned();
    assert_eq!(sent["thread"], label.as_str());
    assert_eq!(inbox[0]["recipient"], "s…@example.test");

    // Through the form, in a real browser: nothing loaded from elsewhere,
    // the strict policy in force.
    let shots = dir.path().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let browser = answer_in_browser(
        &answer_url,
        "Who is this? Thank you, whoever you are.",
        &shots,
    );
    assert_eq!(browser["form_title"], "Answer a message", "{browser}");
    assert_eq!(browser["label"], "Your answer");
    assert_eq!(browser["title"], "Thank you", "{browser}");
    assert_eq!(browser["external"], serde_json::json!([]), "{browser}");
    assert!(
        browser["csp"]
            .as_str()
            .unwrap()
            .contains("default-src 'none'")
    );

    // By mail, through Postfix: quotes, signature and the photo left out,
    // the address the person typed removed.
    send_to(&postfix, &reply_to, &emailed_answer(&reply_to, &first_id));
    let deadline = Instant::now() + CONVERGE;
    while answers(&fed, "stored") < 2.0 {
        let exit = fed.exit.as_ref().unwrap();
        let text = scrape_metrics(exit.started.metrics_addr()).unwrap();
        assert!(
            Instant::now() < deadline,
            "the emailed answer was never stored:\n{}\n{}\n{}",
            text.lines()
                .filter(|l| l.contains("exit_answers") || l.contains("exit_inbound"))
                .collect::<Vec<_>>()
                .join("\n"),
            postfix.log(),
            exit.process.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let inbox = wait_inbox(&sender, "two answers", |v| answer_count(v) == 2);
    let texts: Vec<&str> = inbox[0]["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&"Who is this? Thank you, whoever you are."),
        "{texts:?}"
    );
    let mailed = inbox[0]["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["via"] == "email")
        .unwrap();
    let mailed_text = mailed["text"].as_str().unwrap();
    assert!(
        mailed_text.starts_with("I remember that winter too."),
        "{mailed_text}"
    );
    assert!(
        !mailed_text.contains("thank you for that winter"),
        "{mailed_text}"
    );
    assert!(!mailed_text.contains("sam@example.test"), "{mailed_text}");
    assert!(!mailed_text.contains("Sam"), "{mailed_text}");
    assert_eq!(mailed["dropped_attachments"], 1);
    // The person who answered by mail hears that the photo was left out.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let notices: Vec<String> = emails(&postfix)
            .into_iter()
            .filter(|e| body(e).contains("1 attachment(s) of your email were left out"))
            .collect();
        if let [notice] = notices.as_slice() {
            assert_eq!(header_text(notice, "Auto-Submitted"), "auto-replied");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no notice of the dropped attachment"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = sender.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("Conversations: 1 (2 answer(s) fetched)"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let shown = sender.run(&["inbox", &label]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("I remember that winter too."));

    // Bad input: a forged token, a refused answer, an empty one.
    let forged = format!("http://127.0.0.1:{http}/answer/{}", "ab".repeat(64));
    assert!(client_common::http_post(&forged, "text=hello").contains(" 400 "));
    let refused = client_common::http_post(&answer_url, "text=I+will+kill+you");
    assert!(refused.contains(" 422 "), "{refused}");
    assert!(client_common::http_post(&answer_url, "text=+++").contains(" 422 "));
    let forged_mail = format!("a-{}@leak.test", "cd".repeat(26));
    send_to(
        &postfix,
        &forged_mail,
        &emailed_answer(&forged_mail, &first_id),
    );
    // Someone the email was forwarded to cannot answer in Sam's name.
    let forwarded = emailed_answer(&reply_to, &first_id).replace(
        "From: Sam <sam@example.test>",
        "From: Eve <eve@example.test>",
    );
    send_to(&postfix, &reply_to, &forwarded);
    let deadline = Instant::now() + CONVERGE;
    while answers(&fed, "not_recipient") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the forwarded answer was never refused"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + CONVERGE;
    while answers(&fed, "bad_token") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the forged mail was never counted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(answers(&fed, "stored"), 2.0);
    assert_eq!(answers(&fed, "refused"), 1.0);

    // A follow-up threads under the first email.
    let out = sender.run(&[
        "reply",
        &label,
        "--wait",
        "--json",
        "It was me, from the third floor.",
    ]);
    assert!(
        json_line(&out).contains("\"outcome\":\"delivered\""),
        "{}",
        stderr(&out)
    );
    let delivered = emails(&postfix);
    let follow_up = delivered
        .iter()
        .find(|e| body(e).starts_with("It was me"))
        .unwrap();
    assert_eq!(header_text(follow_up, "In-Reply-To"), first_id);
    assert!(header_text(follow_up, "References").contains(&first_id));

    // An answer stored while the agent is stopped survives an exit restart.
    agent.kill();
    let stored = client_common::http_post(&answer_url, "text=See+you+at+lunch%3F");
    assert!(stored.contains(" 200 "), "{stored}");
    let exit = fed.exit.take().unwrap();
    let port = exit.started.dial_addr().to_string();
    let port = port
        .split("/tcp/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    drop(exit);
    let config = dir.path().join("exit").join("leak-node.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "/ip4/127.0.0.1/tcp/0",
            &format!("/ip4/127.0.0.1/tcp/{port}"),
        ),
    )
    .unwrap();
    let mut process = NodeProcess::run("exit", &config, &restart_args(&fed, &exit_args), &[]);
    let started = process.wait_started(true, Duration::from_secs(60));
    fed.exit = Some(client_common::Node { process, started });
    let _agent = sender.start_agent();
    wait_inbox(&sender, "the answer kept across the restart", |v| {
        answer_count(v) == 3
    });

    // The recipient ends the conversation: a follow-up is not delivered,
    // and the form takes no more answers.
    assert!(client_common::http_post(&end_url, "").contains(" 200 "));
    let ended = client_common::http_post(&answer_url, "text=one+more");
    assert!(ended.contains(" 410 "), "{ended}");
    let out = sender.run(&[
        "reply",
        &label,
        "--wait",
        "--json",
        "Sorry, one last thing.",
    ]);
    let said = format!("{}{}", json_line(&out), stderr(&out));
    assert!(
        said.contains("thread_ended") || said.contains("ended this conversation"),
        "{said}"
    );
    assert_eq!(
        emails(&postfix)
            .iter()
            .filter(|e| body(e).starts_with("Sorry"))
            .count(),
        0
    );

    // The exit's disk holds no answer in the clear.
    for needle in ["Who is this?", "I remember that winter", "See you at lunch"] {
        assert_eq!(
            any_file_holds(&dir.path().join("exit"), needle.as_bytes()),
            None,
            "{needle}"
        );
    }
}

/// The exit's run arguments again (the harness's and the test's).
fn restart_args<'a>(fed: &'a Federation, extra: &'a [&'a str]) -> Vec<&'a str> {
    let _ = fed;
    let mut args = vec![
        "--set",
        "exit.dns_resolver=\"off\"",
        "--set",
        "exit.receipt_delay_ms=0",
    ];
    args.extend_from_slice(extra);
    args
}
