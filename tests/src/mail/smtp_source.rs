//! Measuring an SMTP server with Postfix's `smtp-source`: how many
//! messages per second it accepts (the benchmarks' baseline for the
//! exit's delivery rate).

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use super::postfix_program;

/// Messages per second that an SMTP server on 127.0.0.1:`port` accepts
/// from Postfix's `smtp-source`: `messages` messages to
/// `bench@bench.test` over `sessions` parallel sessions; see
/// [`smtp_source_rate_to`].
pub fn smtp_source_rate(port: u16, messages: usize, sessions: usize) -> f64 {
    smtp_source_rate_to(port, messages, sessions, "bench@bench.test")
}

/// Messages per second that an SMTP server on 127.0.0.1:`port` accepts
/// from `smtp-source -s SESSIONS -m MESSAGES -f bench@bench.test -t
/// RECIPIENT -M bench.test`: one message per connection, smtp-source's
/// default small message, timed from start to exit. For a [`Postfix`](super::Postfix) this
/// measures how fast it queues mail, not how fast it delivers it. Panics
/// (with what smtp-source printed) if any reply was not the expected one.
pub fn smtp_source_rate_to(port: u16, messages: usize, sessions: usize, recipient: &str) -> f64 {
    smtp_source_rate_with(
        port,
        messages,
        sessions,
        recipient,
        &SourceOptions::default(),
    )
}

/// How [`smtp_source_rate_with`] runs `smtp-source`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceOptions {
    /// Each session sends its messages over one connection (`-d`) instead
    /// of connecting for each.
    pub reuse_connections: bool,
    /// Runs it on this CPU only (with `taskset -c`).
    pub cpu: Option<usize>,
}

/// As [`smtp_source_rate_to`], run as `options` say.
pub fn smtp_source_rate_with(
    port: u16,
    messages: usize,
    sessions: usize,
    recipient: &str,
    options: &SourceOptions,
) -> f64 {
    let mut command = match options.cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset
                .args(["-c", &cpu.to_string()])
                .arg(postfix_program("smtp-source"));
            taskset
        }
        None => Command::new(postfix_program("smtp-source")),
    };
    if options.reuse_connections {
        command.arg("-d");
    }
    assert!(messages > 0 && sessions > 0, "smtp-source needs work to do");
    let started = Instant::now();
    let output = command
        .args(["-s", &sessions.to_string(), "-m", &messages.to_string()])
        .args([
            "-f",
            "bench@bench.test",
            "-t",
            recipient,
            "-M",
            "bench.test",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running smtp-source: {e}"));
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "smtp-source {options:?} to 127.0.0.1:{port} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    messages as f64 / elapsed.as_secs_f64()
}
