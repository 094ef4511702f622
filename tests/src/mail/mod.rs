//! Real mail servers for the tests, one module per concept:
//!
//! - [`postfix`]: a private [`Postfix`] that delivers every recipient of
//!   its domains into one Maildir;
//! - [`smtp_sink`]: Postfix's `smtp-sink` as an [`SmtpSink`] that accepts
//!   mail or fails in a chosen way;
//! - [`smtp_source`]: [`smtp_source_rate`], to measure an SMTP server with
//!   `smtp-source`;
//! - [`test_ca`]: the throwaway certificate authority ([`TestCa`]) a TLS
//!   Postfix takes its certificate from;
//! - [`delivered`]: a message as a server stored it ([`DeliveredMail`]),
//!   with its headers and text;
//! - [`instant_smtp`]: an SMTP server in the benchmark's own process that
//!   accepts at once and notes when ([`start_instant_smtp`]), for latency
//!   measurements on one clock.
//!
//! Everything public is also re-exported here (`leak_tests::mail::Postfix`).
//!
//! They need Debian's `postfix` package and root (Postfix's daemons switch
//! users): `scripts/test.sh` installs it through `scripts/lib/install-deps.sh`.
//! Nothing here skips a test when Postfix is missing: it panics and says
//! how to install it.
//!
//! A [`Postfix`] may also offer STARTTLS, implicit TLS on a second port,
//! and AUTH (Cyrus SASL with a sasldb): [`Postfix::builder`]. Its
//! certificate comes from a throwaway CA ([`TestCa`], made with the
//! `openssl` command) whose PEM file a client can be told to trust. AUTH
//! needs Debian's `sasl2-bin` and `libsasl2-modules` too.
//!
//! Each server listens on 127.0.0.1 on a port of its own, reserved across
//! test processes ([`crate::ports`]).
//!
//! Everything here blocks the calling thread (starting Postfix takes a few
//! hundred milliseconds). In an async test whose runtime also runs the
//! code under test, wait with [`Postfix::wait_for_messages_async`] rather
//! than [`Postfix::wait_for_messages`].

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tempfile::TempDir;

pub mod delivered;
pub mod dns;
pub mod instant_smtp;
pub mod postfix;
pub mod provider;
pub mod smtp_sink;
pub mod smtp_source;
pub mod test_ca;

pub use crate::ports::PORT_RANGE;
pub use delivered::DeliveredMail;
pub use dns::Dnsmasq;
pub use instant_smtp::{Accepted, Transaction, start_instant_smtp};
pub use postfix::{Postfix, PostfixBuilder};
pub use smtp_sink::SmtpSink;
pub use smtp_source::{
    SourceOptions, smtp_source_rate, smtp_source_rate_to, smtp_source_rate_with,
};
pub use test_ca::TestCa;

/// How long a server gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of one of Postfix's programs (`postfix`, `smtp-sink`,
/// `smtp-source`): in `/usr/sbin`, else anywhere on `PATH`. Panics with
/// how to install them when they are missing.
pub fn postfix_program(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() {
        return sbin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{name} not found (neither /usr/sbin/{name} nor on PATH): the mail-server tests need \
         Debian's postfix package; install it with scripts/lib/install-deps.sh (as root), \
         which scripts/test.sh runs"
    );
}

/// Whether this process runs as root (the owner of `/proc/self` is the
/// effective uid).
fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A fresh directory for a server, traversable by Postfix's users.
fn server_dir(prefix: &str) -> TempDir {
    // /tmp rather than $TMPDIR: every directory on the way must be
    // traversable by the `postfix` user and by `nobody`.
    let base = Path::new("/tmp");
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        })
        .expect("a temporary directory for a mail server");
    set_mode(dir.path(), 0o755);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Polls `read` until it returns at least `n` items or `timeout` passes;
/// panics then with `context()`.
fn wait_for<T>(
    n: usize,
    timeout: Duration,
    mut read: impl FnMut() -> Vec<T>,
    context: impl FnOnce() -> String,
) -> Vec<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = read();
        if found.len() >= n {
            return found;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {n} message(s), got {}\n{}",
                found.len(),
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
