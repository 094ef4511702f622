//! The client and the exit give the same verdict on the same text: `leak
//! check` (the sender's binary) against what an exit answers when the text
//! reaches it anyway (sent without the client's pre-check).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_common;

use std::time::Duration;

use leak_protocol::Outcome;
use leak_tests::exit::{Draft, Federation};

/// `leak check --json TEXT`: `None` if accepted, else the rule.
fn client_verdict(text: &str) -> Option<String> {
    let output = std::process::Command::new(client_common::leak_bin())
        .args(["check", "--json", text])
        .env_remove("LEAK_CONFIG")
        .output()
        .unwrap();
    let json = String::from_utf8(output.stdout).unwrap();
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    match value["verdict"].as_str().unwrap() {
        "accepted" => {
            assert_eq!(output.status.code(), Some(0));
            None
        }
        "refused" => {
            assert_eq!(output.status.code(), Some(1));
            Some(value["rule"].as_str().unwrap().to_owned())
        }
        other => panic!("verdict {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_exit_agree() {
    let dir = tempfile::tempdir().unwrap();
    let fed = Federation::start(dir.path(), 2, |c| c.exit.per_recipient_per_day = 0).await;
    let sender = fed.sender();
    let long = "I lied to you about the trip. ".repeat(80);
    let texts = [
        "You killed it at karaoke last night.",
        "I have a crush on you and I never dared to say it.",
        "You are underpaid and you should ask for a raise.",
        "I will kill you tomorrow.",
        "You should just kill yourself.",
        "You are a worthless pathetic loser and everyone hates you.",
        "Call me at 555-123-4567 tonight.",
        "Look at https://example.com/x",
        "Congratulations! You have won a FREE prize, claim your cash now.",
        "I w1ll k.i.l.l you",
        long.as_str(),
    ];
    let mut refused = 0;
    for (i, text) in texts.iter().enumerate() {
        let expected = client_verdict(text);
        let to = format!("agree{i}@example.org");
        let sent = sender.leak(&fed, &Draft::new(&to, text)).await;
        let outcome = sender
            .receipt(&sent, Duration::from_secs(30))
            .await
            .expect("a receipt")
            .outcome;
        match (&expected, &outcome) {
            (None, Outcome::Delivered) => {}
            (
                Some(rule),
                Outcome::Refused {
                    rule: exit_rule, ..
                },
            ) => {
                assert_eq!(rule, exit_rule, "{text:?}");
                refused += 1;
            }
            _ => panic!("{text:?}: client {expected:?}, exit {outcome:?}"),
        }
    }
    assert!(refused >= 6, "the sample covers refusals: {refused}");
    fed.shutdown().await;
}
