//! Postfix's `smtp-sink` as a test server: accepts every message, or
//! fails with a chosen 4xx, 5xx or 421 at a chosen command, and keeps (or
//! only counts) what it receives.

use std::{
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

use super::{
    DeliveredMail, START_TIMEOUT, delivered::read_mail_files, is_root, postfix_program, read_lossy,
    server_dir, set_mode, wait_for,
};
use crate::ports::{PortReservation, listening};

/// Postfix's `smtp-sink` on 127.0.0.1 on a port of its own: an SMTP server
/// that answers every command at once and keeps each transaction that
/// reaches DATA as a file ([`SmtpSink::messages`]), or fails in the way
/// its flags say (`man smtp-sink`).
///
/// The constructors and what they answer (the greeting is `220 smtp-sink
/// ESMTP`, EHLO/HELO `250`, QUIT `221 Bye`, unless said otherwise):
///
/// | constructor | flags | answers |
/// |---|---|---|
/// | [`accepting`](SmtpSink::accepting) | none | MAIL `250 2.1.0 Ok`, RCPT `250 2.1.5 Ok`, DATA `354`, `.` `250 2.0.0 Ok` |
/// | [`temp_failing`](SmtpSink::temp_failing) | `-r RCPT` | every RCPT `450 4.3.0 Error: command failed` |
/// | [`perm_failing`](SmtpSink::perm_failing) | `-f RCPT` | every RCPT `500 5.3.0 Error: command failed` |
/// | [`deferring_421`](SmtpSink::deferring_421) | `-Q RCPT` | the first RCPT `421 4.0.0 Server closing connection`, then it closes the connection |
///
/// The `_at` variants take another command instead of RCPT: `CONNECT`
/// (the greeting), `HELO`, `EHLO`, `MAIL`, `RCPT`, `DATA`, `.` (the end of
/// the message), `RSET`, `NOOP`, `QUIT`. After a refused RCPT, DATA gets
/// `503 5.5.1 Error: need RCPT command`. `-r`/`-f` also stop it from
/// announcing PIPELINING.
///
/// Dropping it kills it and removes its directory.
#[derive(Debug)]
pub struct SmtpSink {
    child: Option<Child>,
    port: PortReservation,
    dir: TempDir,
    args: Vec<String>,
    /// Whether transactions are dumped into files (`-d`); else only
    /// counted (`-c`).
    dumps: bool,
}

impl SmtpSink {
    /// Runs `smtp-sink` with `args` (before the address) and waits until it
    /// listens. Each transaction that reaches DATA is dumped into a file
    /// (`-d`); as root it runs as `nobody` (`-u nobody`). Panics with what
    /// it printed if it does not come up.
    pub fn start(args: &[&str]) -> Self {
        Self::launch(args, true)
    }

    /// Accepts every message and keeps nothing but smtp-sink's running
    /// counters (`-c`, no `-d`): a sink that costs as little as smtp-sink
    /// can, for benchmarks. [`SmtpSink::received_count`] reads the count;
    /// [`SmtpSink::messages`] is always empty.
    pub fn counting() -> Self {
        Self::launch(&["-c"], false)
    }

    fn launch(args: &[&str], dumps: bool) -> Self {
        let program = postfix_program("smtp-sink");
        let dir = server_dir("leak-smtp-sink-");
        let dump = dir.path().join("dump");
        fs::create_dir(&dump).unwrap_or_else(|e| panic!("mkdir {}: {e}", dump.display()));
        set_mode(&dump, 0o777); // written by `nobody`
        let port = PortReservation::new();
        let log_path = dir.path().join("smtp-sink.log");
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let mut command = Command::new(program);
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        if dumps {
            command.arg("-d").arg(dump.join("msg."));
        }
        command
            .args(args)
            .arg(format!("127.0.0.1:{}", port.port))
            .arg("64")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a second handle on the log"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("running smtp-sink: {e}"));
        let mut sink = Self {
            child: Some(child),
            port,
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            dumps,
        };
        sink.wait_listening();
        sink
    }

    /// Accepts every message (no flags).
    pub fn accepting() -> Self {
        Self::start(&[])
    }

    /// Answers every RCPT with `450 4.3.0 Error: command failed` (`-r RCPT`).
    pub fn temp_failing() -> Self {
        Self::temp_failing_at("RCPT")
    }

    /// Answers every `command` with `450 4.3.0 Error: command failed`
    /// (`-r COMMAND`); for `CONNECT` that is the greeting.
    pub fn temp_failing_at(command: &str) -> Self {
        Self::start(&["-r", command])
    }

    /// Answers every RCPT with `500 5.3.0 Error: command failed` (`-f RCPT`).
    pub fn perm_failing() -> Self {
        Self::perm_failing_at("RCPT")
    }

    /// Answers every `command` with `500 5.3.0 Error: command failed`
    /// (`-f COMMAND`).
    pub fn perm_failing_at(command: &str) -> Self {
        Self::start(&["-f", command])
    }

    /// Answers the first RCPT with `421 4.0.0 Server closing connection`
    /// and closes the connection (`-Q RCPT`).
    pub fn deferring_421() -> Self {
        Self::deferring_421_at("RCPT")
    }

    /// Answers `command` with `421 4.0.0 Server closing connection` and
    /// closes the connection (`-Q COMMAND`); for `CONNECT` the 421 is the
    /// greeting.
    pub fn deferring_421_at(command: &str) -> Self {
        Self::start(&["-Q", command])
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port.port
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port())
    }

    /// The flags it was started with (beyond `-u`, `-d`).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The transactions that went through DATA to the final `.` so far,
    /// oldest first, whatever the reply to `.` was (`-r .`/`-f .` keep them
    /// too). Each holds smtp-sink's `X-Client-Addr`, `X-Client-Proto`,
    /// `X-Helo-Args`, `X-Mail-Args` (`<sender>`), one `X-Rcpt-Args`
    /// (`<recipient>`) per accepted recipient and a `Received` field, then
    /// the message as sent (with CRLF).
    ///
    /// smtp-sink opens a transaction's file at MAIL and deletes it at RSET
    /// or the end of the session unless `.` came: the files it still has
    /// open (transactions in progress) are left out here. Once the client
    /// has the reply to `.`, its message is in.
    pub fn messages(&self) -> Vec<DeliveredMail> {
        let dump = self.dir.path().join("dump");
        // Listed first, then the open files: a file closed in between is
        // complete.
        let mut messages = read_mail_files(std::slice::from_ref(&dump));
        let open = self.open_files();
        messages.retain(|message| !open.contains(&message.path));
        messages
    }

    /// The number of [`SmtpSink::messages`].
    pub fn count(&self) -> usize {
        self.messages().len()
    }

    /// Transactions that reached MAIL so far, complete or not: a cheap
    /// count (no file is read) for benchmarks polling thousands of messages.
    pub fn started_count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("dump")).map_or(0, Iterator::count)
    }

    /// Messages accepted so far (the end of their DATA answered), by
    /// smtp-sink's own counter: for a [`SmtpSink::counting`] sink, which
    /// prints `sess=N quit=N mesg=N` after every message; panics for one
    /// that was not started counting.
    pub fn received_count(&self) -> usize {
        assert!(!self.dumps, "received_count needs SmtpSink::counting");
        let path = self.dir.path().join("smtp-sink.log");
        let Ok(mut file) = File::open(&path) else {
            return 0;
        };
        // Only the end: the counters are rewritten (after a CR) each time.
        let len = file.metadata().map_or(0, |m| m.len());
        let mut tail = Vec::new();
        if file.seek(SeekFrom::Start(len.saturating_sub(256))).is_err()
            || file.read_to_end(&mut tail).is_err()
        {
            return 0;
        }
        let tail = String::from_utf8_lossy(&tail);
        // Each line of counters ends with a CR: the last complete one.
        let Some((complete, _)) = tail.rsplit_once('\r') else {
            return 0;
        };
        complete
            .rsplit_once("mesg=")
            .map(|(_, rest)| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until at least `n` transactions were dumped and returns them
    /// all; panics after `timeout`. Blocks the thread.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<DeliveredMail> {
        wait_for(
            n,
            timeout,
            || self.messages(),
            || format!("smtp-sink {:?} printed:\n{}", self.args, self.log()),
        )
    }

    /// What smtp-sink printed (errors only, unless started with `-v`/`-c`).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("smtp-sink.log"))
    }

    /// Kills it (idempotent); its dumps stay readable until it is dropped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The files the smtp-sink process has open.
    fn open_files(&self) -> Vec<PathBuf> {
        let Some(child) = &self.child else {
            return Vec::new();
        };
        fs::read_dir(format!("/proc/{}/fd", child.id()))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| fs::read_link(entry.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!(
                    "smtp-sink {:?} on port {} exited at start ({status}):\n{}",
                    self.args,
                    self.port(),
                    self.log()
                );
            }
            if listening(self.port()) {
                return;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "smtp-sink {:?} did not listen on port {} within {START_TIMEOUT:?}:\n{}",
                    self.args,
                    self.port(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}
