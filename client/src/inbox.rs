//! `leak inbox`: the conversations on this machine and their answers
//! ([`crate::threads`]), read from the state directory (the agent fetches
//! the answers; this command only reads what it stored).

use std::path::Path;

use serde_json::json;

use crate::{
    state::day_to_date,
    threads::{ThreadRecord, Threads},
};

fn minute_to_time(minute: u64) -> String {
    let day = minute / 1440;
    let in_day = minute % 1440;
    format!(
        "{} {:02}:{:02} UTC",
        day_to_date(day),
        in_day / 60,
        in_day % 60
    )
}

/// A conversation's state, in words.
pub fn state_words(thread: &ThreadRecord) -> &'static str {
    match thread.state.as_str() {
        "ended" => "ended by the recipient (no follow-ups)",
        "gone" => "over (the exit keeps nothing of it any more)",
        _ => "open",
    }
}

/// A conversation as `leak inbox --json` and the web page show it.
pub fn summary(thread: &ThreadRecord) -> serde_json::Value {
    json!({
        "label": thread.label,
        "recipient": thread.redacted_recipient(),
        "relationship": thread.relationship,
        "exit": thread.exit_domain,
        "state": thread.state,
        "state_words": state_words(thread),
        "sent": thread.sent_days.iter().map(|d| day_to_date(*d)).collect::<Vec<_>>(),
        "answers": thread.answers.iter().map(|a| json!({
            "seq": a.seq,
            "via": a.via,
            "received": minute_to_time(a.received_minute),
            "text": a.text,
            "dropped_attachments": a.dropped_attachments,
        })).collect::<Vec<_>>(),
    })
}

/// Deletes the conversation `label` (or the one its first letters name)
/// from this machine, unless a message of it still waits to leave.
pub fn forget_thread(state_dir: &Path, label: &str) -> anyhow::Result<()> {
    let threads = Threads::open(state_dir)?;
    let thread = threads.load(label)?;
    let (queued, _) = crate::agent::outbox::Outbox::open(state_dir)?.list()?;
    if queued
        .iter()
        .any(|e| e.thread.as_deref() == Some(thread.label.as_str()))
    {
        anyhow::bail!(
            "a message of this conversation is still waiting to leave; forget it once it has"
        );
    }
    threads.forget(&thread.label)
}

/// Lists the conversations (or shows one, or forgets one).
pub fn inbox(
    state_dir: &Path,
    label: Option<&str>,
    forget: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let threads = Threads::open(state_dir)?;
    if let Some(label) = forget {
        forget_thread(state_dir, label)?;
        if !json {
            println!("forgot the conversation {label}");
        }
        return Ok(());
    }
    let list = match label {
        Some(label) => vec![threads.load(label)?],
        None => {
            let (good, bad) = threads.list()?;
            for label in bad {
                eprintln!("leak: the conversation {label} does not read; skipped");
            }
            good
        }
    };
    if json {
        println!(
            "{}",
            serde_json::Value::Array(list.iter().map(summary).collect())
        );
        return Ok(());
    }
    if list.is_empty() {
        println!("no conversations (a leak sent through the agent can be answered)");
        return Ok(());
    }
    for thread in &list {
        let sent = thread
            .sent_days
            .iter()
            .map(|d| day_to_date(*d))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{}  to {} as {} via {}: {} message(s) sent ({sent}); {} answer(s); {}",
            thread.label,
            thread.redacted_recipient(),
            thread.relationship,
            thread.exit_domain,
            thread.sent_days.len(),
            thread.answers.len(),
            state_words(thread),
        );
        if label.is_some() || list.len() == 1 {
            for (n, answer) in thread.answers.iter().enumerate() {
                println!(
                    "\n  answer {} ({}, {}):",
                    n + 1,
                    answer.via,
                    minute_to_time(answer.received_minute)
                );
                for line in answer.text.lines() {
                    println!("    {line}");
                }
                if answer.dropped_attachments > 0 {
                    println!(
                        "    [{} attachment(s) left out by the exit]",
                        answer.dropped_attachments
                    );
                }
            }
        }
    }
    if label.is_none() && list.len() > 1 {
        println!(
            "\n`leak inbox LABEL` shows a conversation's answers; `leak reply LABEL \"text\"` answers."
        );
    }
    Ok(())
}
