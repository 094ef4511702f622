//! The commands' side of the agent: `leak agent [stop]`, `leak send`
//! handing a leak to the agent (and maybe waiting for its receipt), what
//! `leak send` says when no agent runs, and the agent's lines in
//! `leak status`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use leak_client::{
    agent::ipc::{self, AgentStatus, IpcError, Request, Response},
    directory::format_age,
    send::unix_ms,
    state::{EndedRecord, Finished, LeakRecord, StateDir, UnknownLeak, outcome_name},
};
use leak_protocol::{Outcome, Recipient, Relationship};
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::{Status, Usage, describe};

/// How long a command waits for the agent's answer (it solves the
/// anti-abuse stamp before answering a send).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// What `leak send` says when no agent runs, and `leak send --direct`
/// gives up.
pub fn no_agent_message(root: &Path) -> String {
    format!(
        "no agent is running (state directory {}), so nothing was sent.\n\
         Start it with `leak agent` (or `systemctl --user start leak-agent`), then send again.\n\
         `leak send --direct` sends without the agent, and loses what the agent protects:\n\
         \x20 - no cover traffic: your connection carries this leak and nothing else;\n\
         \x20 - the timing of your connection to the network reveals the moment you send;\n\
         \x20 - fetching the receipt reveals it again, from your address, when the receipt is due.",
        root.display()
    )
}

/// `leak ui`: opens the agent's page in the browser (through a private
/// file that forwards to it, so the key is not on a command line other
/// users of the machine can list), or prints its address.
pub fn open_ui(state_dir: &Path, print: bool) -> anyhow::Result<Status> {
    let (url, note) = match ipc::call(state_dir, Request::Ui, Duration::from_secs(10)) {
        Ok(Response::Ui { url, note }) => (url.map(Zeroizing::new), note),
        Ok(other) => anyhow::bail!("the agent answered {other:?}; is it another version of leak?"),
        Err(IpcError::NotRunning(_)) => {
            return Err(Usage(format!(
                "no agent is running (state directory {}): start it with `leak agent` (or `systemctl --user start leak-agent`), then run `leak ui` again",
                state_dir.display()
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let Some(url) = url else {
        eprintln!("leak: the agent serves no page: {note}");
        return Ok(Status::Failed);
    };
    if print {
        println!("{}", url.as_str());
        return Ok(Status::Ok);
    }
    let opener = state_dir.join("ui-open.html");
    let page = Zeroizing::new(format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={url}\">\
         <title>Leak</title><p><a href=\"{url}\">Open Leak</a></p>",
        url = url.as_str()
    ));
    leak_client::state::write_atomically(&opener, page.as_bytes())?;
    let graphical =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opened = graphical
        && std::process::Command::new("xdg-open")
            .arg(&opener)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if opened {
        println!("Opened Leak in your browser.");
    } else {
        println!(
            "Open this address in your browser (it holds the key to your agent: do not share it):\n{}",
            url.as_str()
        );
    }
    Ok(Status::Ok)
}

/// A leak to hand over.
pub struct Handoff {
    /// Who receives it.
    pub recipient: Recipient,
    /// Who the sender is to them.
    pub relationship: Relationship,
    /// The checked text.
    pub text: Zeroizing<String>,
    /// Release it at a random time in this window.
    pub within: Option<Duration>,
    /// Hops of its path, when not the config's.
    pub hops: Option<usize>,
    /// Wait for the receipt.
    pub wait: bool,
    /// Print one JSON object.
    pub json: bool,
    /// A follow-up in this conversation (its label).
    pub thread: Option<String>,
    /// Send it without a way to answer.
    pub no_answers: bool,
}

/// `leak send` with an agent: hands the leak over, then returns or waits.
pub fn send(state: &StateDir, leak: Handoff) -> anyhow::Result<Status> {
    let request = Request::Send {
        recipient: leak.recipient.as_str().to_owned(),
        relationship: leak.relationship.to_string(),
        text: leak.text.as_str().to_owned(),
        within_secs: leak.within.map(|d| d.as_secs()),
        hops: leak.hops,
        thread: leak.thread.clone(),
        no_answers: leak.no_answers,
    };
    let started = Instant::now();
    let (message_id, release_at_ms, thread) = match ipc::call(state.root(), request, ANSWER_TIMEOUT)
    {
        Ok(Response::Queued {
            message_id,
            release_at_ms,
            thread,
        }) => (message_id, release_at_ms, thread),
        Ok(Response::Error { message, .. }) => {
            anyhow::bail!("the agent did not take the leak: {message}")
        }
        Ok(other) => anyhow::bail!("the agent answered {other:?} to a send"),
        Err(IpcError::NotRunning(root)) => return Err(Usage(no_agent_message(&root)).into()),
        Err(e) => return Err(e.into()),
    };
    if !leak.wait {
        if leak.json {
            println!(
                "{}",
                json!({ "message_id": message_id, "outcome": "queued", "rule": null, "reason": null,
                        "attempts": 0, "elapsed_ms": elapsed_ms(started),
                        "release_at_ms": release_at_ms, "thread": thread })
            );
        } else {
            println!("queued; the receipt will appear in `leak status`");
            println!(
                "  message id {message_id}, {}",
                leaves_in(release_at_ms, unix_ms())
            );
            if let Some(label) = &thread {
                println!("  answers will appear in `leak inbox {label}`");
            }
            if let Some(agent) = agent_status(state.root()) {
                println!("  anonymity: {}", agent.anonymity_note);
            }
        }
        return Ok(Status::Ok);
    }
    if !leak.json {
        eprintln!(
            "queued ({}); waiting for the receipt (it can take many minutes; Ctrl-C stops waiting, not the leak)",
            leaves_in(release_at_ms, unix_ms())
        );
        if let Some(agent) = agent_status(state.root()) {
            eprintln!("anonymity: {}", agent.anonymity_note);
        }
    }
    let (record, ended) = wait_for_receipt(state, &message_id)?;
    let attempts = record.attempts.iter().filter(|a| a.sent).count();
    let (name, rule, reason, status, line) = match &ended.result {
        Finished::Receipt { receipt } => {
            let (status, line) = describe(receipt, &record.exit.domain);
            let (rule, reason) = match receipt {
                Outcome::Refused { rule, reason } => (Some(rule.clone()), Some(reason.clone())),
                _ => (None, None),
            };
            (outcome_name(receipt), rule, reason, status, line)
        }
        Finished::Lost => (
            "lost",
            None,
            None,
            Status::Failed,
            leak_client::words::LOST.to_owned(),
        ),
        Finished::NoReceipt => (
            "no_receipt",
            None,
            None,
            Status::Failed,
            format!(
                "Failed: no receipt from {} after {attempts} attempt(s)",
                record.exit.domain
            ),
        ),
    };
    if leak.json {
        println!(
            "{}",
            json!({ "message_id": message_id, "outcome": name, "rule": rule, "reason": reason,
                    "attempts": attempts, "elapsed_ms": elapsed_ms(started),
                    "exit": record.exit.domain, "thread": thread })
        );
    } else {
        println!("{line}");
        println!(
            "  message id {message_id}, {attempts} attempt(s), {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if let Some(label) = &thread {
            println!("  answers will appear in `leak inbox {label}`");
        }
    }
    Ok(status)
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// "leaves at the next loop slot" / "leaves within 1h12m".
fn leaves_in(release_at_ms: u64, now_ms: u64) -> String {
    if release_at_ms <= now_ms {
        "leaves at the agent's next loop slot".to_owned()
    } else {
        format!(
            "leaves in about {}",
            format_age((release_at_ms - now_ms).div_ceil(1000))
        )
    }
}

/// Watches the leak's record (the agent writes it) until it ends: the
/// record as last seen pending (for the attempts and the exit, which the
/// summary does not keep) and the summary it left.
fn wait_for_receipt(state: &StateDir, id: &str) -> anyhow::Result<(LeakRecord, EndedRecord)> {
    let mut checks = 0u32;
    let mut record = state.load(id)?;
    loop {
        match state.load(id) {
            Ok(now) => record = now,
            Err(e) if e.is::<UnknownLeak>() => {
                if let Some(ended) = state.load_ended(&record.label)? {
                    return Ok((record, ended));
                }
                anyhow::bail!(
                    "the leak ended and its summary is already forgotten (agent.forget_ended_after_days)"
                );
            }
            Err(e) => return Err(e),
        }
        checks += 1;
        if checks.is_multiple_of(20) && !ipc::running(state.root()) {
            anyhow::bail!(
                "the agent stopped; the leak stays in its outbox and leaves when it starts again, unless this computer restarts first (its text is kept only in memory; `leak status` shows it)"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The running agent's state, if one runs.
pub fn agent_status(root: &Path) -> Option<AgentStatus> {
    match ipc::call(root, Request::Status, Duration::from_secs(10)) {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    }
}

/// The agent's lines of `leak status`.
pub fn print_agent(status: &AgentStatus) {
    let now = unix_ms();
    let c = &status.counters;
    println!(
        "Agent: running for {}; guard {} (since {} ago); {} node(s) in its directory",
        format_age(now.saturating_sub(status.started_at_ms) / 1000),
        status.guard.as_deref().unwrap_or("not chosen yet"),
        status.guard_since_ms.map_or_else(
            || "-".to_owned(),
            |t| format_age(now.saturating_sub(t) / 1000)
        ),
        status.directory_nodes
    );
    println!(
        "  sent {} drop(s), {} loop(s) ({} back), {} leak packet(s); {} receipt(s); {} poll(s); {} failure(s)",
        c.drops_sent, c.loops_sent, c.loops_returned, c.leaks_sent, c.receipts, c.polls, c.failures
    );
    // The note says it in words, with the number when there is one.
    println!("  anonymity: {}", status.anonymity_note);
}

/// The state column of a leak the agent still holds.
pub fn queued_line(status: &AgentStatus, record: &LeakRecord) -> Option<String> {
    let queued = status
        .outbox
        .iter()
        .find(|q| q.message_id == record.message_id)?;
    let now = unix_ms();
    Some(if queued.attempts_sent == 0 {
        format!("queued, {}", leaves_in(queued.next_at_ms, now))
    } else {
        "sent; waiting for the receipt".to_owned()
    })
}

/// `leak agent stop`.
pub fn stop(root: &Path) -> anyhow::Result<Status> {
    match ipc::call(root, Request::Stop, Duration::from_secs(10)) {
        Ok(Response::Stopping) => {
            println!("The agent is stopping; what it holds stays on disk.");
            Ok(Status::Ok)
        }
        Ok(other) => anyhow::bail!("the agent answered {other:?}"),
        Err(IpcError::NotRunning(_)) => {
            println!("No agent is running.");
            Ok(Status::Ok)
        }
        Err(e) => Err(e).context("stopping the agent"),
    }
}

/// `--within 2h`: a duration in seconds, minutes, hours or days (`90s`,
/// `30m`, `2h`, `1d`, or several: `1h30m`).
pub fn parse_within(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30m, 2h or 1h30m");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    if total > 7 * 86_400 {
        return Err(format!("{text:?} is longer than a week"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_windows_parse() {
        assert_eq!(parse_within("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_within("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_within("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_within("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "2", "h", "2x", "0m", "-1h", "8d"] {
            assert!(parse_within(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_refusal_names_the_protections_lost() {
        let text = no_agent_message(Path::new("/s"));
        for needle in [
            "leak agent",
            "systemctl --user start leak-agent",
            "--direct",
            "no cover traffic",
            "reveals the moment you send",
            "receipt",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
