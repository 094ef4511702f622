//! Crash safety: an exit process killed with SIGKILL again and again while
//! it delivers 200 leaks into a real Postfix loses none of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashMap, time::Duration};

use leak_tests::{
    exit::{Draft, ProcessFederation, assert_queue_scrubbed},
    mail::Postfix,
    wait_until,
};
use nix::sys::signal::Signal;

const LEAKS: usize = 200;
const KILLS: usize = 4;
const CONNECTIONS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_loses_nothing() {
    let postfix = Postfix::start("leak.test");
    let dir = tempfile::tempdir().unwrap();
    let mut fed = ProcessFederation::start(
        dir.path(),
        &postfix.smtp_url(),
        CONNECTIONS as u32,
        &[
            "exit.max_rate=20.0".to_owned(),
            "exit.provider_max_rate=20.0".to_owned(),
            "exit.retry_initial_secs=1".to_owned(),
            "exit.retry_max_secs=2".to_owned(),
        ],
        None,
    )
    .await;
    let sender = fed.sender();
    for i in 0..LEAKS {
        let to = format!("crash{i}@leak.test");
        let text = format!("I lied to you, number {i}.");
        let (packet, _) = fed.build(&sender, &Draft::new(&to, &text));
        sender
            .peer
            .send_packets(fed.relays[0].node.peer_id(), &[packet])
            .await
            .unwrap();
    }
    // Every leak accepted (waiting or already delivered) before the kills.
    wait_until(Duration::from_secs(120), "200 leaks accepted", || {
        let counts = fed.queue_counts();
        async move { counts.is_some_and(|(waiting, delivered)| waiting + delivered == LEAKS as u64) }
    })
    .await;

    // Kill it at random points while it delivers, restarting it each time.
    let mut kills = 0;
    for _ in 0..KILLS {
        let pause = Duration::from_millis(200 + rand::random::<u64>() % 1500);
        tokio::time::sleep(pause).await;
        let (waiting, _) = fed.queue_counts().unwrap_or((0, 0));
        if waiting == 0 {
            break;
        }
        fed.exit.signal(Signal::SIGKILL);
        fed.exit.wait_exit(Duration::from_secs(10)).expect("killed");
        kills += 1;
        fed.restart_exit();
    }
    assert!(kills >= 1, "the exit was killed during delivery");

    wait_until(Duration::from_secs(180), "every leak delivered", || {
        let counts = fed.queue_counts();
        async move { counts.is_some_and(|(waiting, _)| waiting == 0) }
    })
    .await;
    let messages = postfix
        .wait_for_messages_async(LEAKS, Duration::from_secs(60))
        .await;
    // Let anything still in Postfix's queue arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = if postfix.messages().len() > messages.len() {
        postfix.messages()
    } else {
        messages
    };
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut recipients = std::collections::HashSet::new();
    for m in &messages {
        *by_id.entry(m.header("Message-ID").unwrap()).or_default() += 1;
        recipients.insert(m.header("To").unwrap());
    }
    let duplicates = messages.len() - by_id.len();
    eprintln!(
        "{kills} kills; {} emails for {} leaks: {duplicates} duplicate(s)",
        messages.len(),
        by_id.len()
    );
    assert_eq!(by_id.len(), LEAKS, "every leak delivered, none lost");
    assert_eq!(recipients.len(), LEAKS);
    // A duplicate can only come from a leak in flight at a kill (between
    // the server's 250 and the commit of its outcome, a few milliseconds):
    // paced at 20 leaks a second, at most one per connection per kill.
    assert!(
        duplicates <= kills * CONNECTIONS,
        "{duplicates} duplicates for {kills} kills"
    );
    let (_, delivered) = fed.queue_counts().unwrap();
    assert_eq!(delivered, LEAKS as u64);
    // `leak-node queue providers`: leak.test is an "other" domain; the
    // deliveries since the last restart at least, nothing paused.
    let providers: serde_json::Value =
        serde_json::from_str(&fed.queue(&["providers"]).unwrap()).unwrap();
    let providers = providers["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 4);
    let other = providers.iter().find(|p| p["provider"] == "other").unwrap();
    assert!(other["delivered"].as_u64().unwrap() > 0, "{other}");
    assert!(other["paused_since_ms"].is_null());
    // The queue directory holds nothing of the leaks any more.
    assert_queue_scrubbed(&fed.exit_dir.join("exit-queue"));
    fed.shutdown().await;
}
