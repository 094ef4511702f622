//! Real mail servers for the tests: a private [`Postfix`] that delivers
//! every recipient of its domains into one Maildir, Postfix's `smtp-sink`
//! as an [`SmtpSink`] that accepts mail or fails in a chosen way, and
//! [`smtp_source_rate`] to measure an SMTP server with `smtp-source`.
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
//! Each server listens on 127.0.0.1 on a port of its own in
//! [`PORT_RANGE`], below the kernel's ephemeral range so that no socket
//! bound to port 0 (nor any outgoing connection) can take it. Ports are
//! reserved across processes with a lock file per port, held while the
//! server lives: Postfix's `master` listens with `SO_REUSEPORT`, so two
//! instances on one port would both start and share its connections
//! without any error.
//!
//! Everything here blocks the calling thread (starting Postfix takes a few
//! hundred milliseconds). In an async test whose runtime also runs the
//! code under test, wait with [`Postfix::wait_for_messages_async`] rather
//! than [`Postfix::wait_for_messages`].

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom},
    net::{TcpListener, TcpStream},
    ops::Range,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tempfile::TempDir;

/// The ports test mail servers listen on: below Linux's ephemeral range
/// (32768–60999), so that nothing that binds port 0 collides with them.
pub const PORT_RANGE: Range<u16> = 20_000..32_000;

/// The uid and gid that own the Maildir (Debian's `nobody`/`nogroup`).
const MAILDIR_OWNER: u32 = 65534;

/// The Cyrus SASL realm of a [`Postfix`] with AUTH: users log in with
/// their bare names.
const SASL_REALM: &str = "leak-test";

/// How long a server gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long Postfix gets to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The uid and gid of the `postfix` user (from `/etc/passwd`).
fn postfix_user() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postfix") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .expect("no postfix user in /etc/passwd: install Debian's postfix package")
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

/// A port of [`PORT_RANGE`] reserved for this process until dropped.
#[derive(Debug)]
struct PortReservation {
    port: u16,
    /// Holds an exclusive lock on `<tmp>/leak-tests-ports/<port>.lock`; the
    /// kernel releases it when the process ends, however it ends.
    _lock: File,
}

impl PortReservation {
    /// A free port no other test process holds.
    fn new() -> Self {
        let dir = std::env::temp_dir().join("leak-tests-ports");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        for _ in 0..1000 {
            let port = rand::random_range(PORT_RANGE);
            let path = dir.join(format!("{port}.lock"));
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            if lock.try_lock().is_err() {
                continue; // another test process has it
            }
            // Something else (not one of these servers) may listen there.
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            return Self { port, _lock: lock };
        }
        panic!("no free port in {PORT_RANGE:?} after 1000 tries");
    }
}

/// Whether a process is still running (a zombie is not: nothing here may
/// reap it, since PID 1 of a container need not).
fn process_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMM) STATE ..."; COMM may hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X' | 'x') | None)
}

/// Whether something listens on 127.0.0.1:`port` (from `/proc/net/tcp`,
/// without connecting).
fn listening(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A")
        })
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The regular files of `dirs`, oldest first (by modification time, then
/// name), read whole.
fn read_mail_files(dirs: &[PathBuf]) -> Vec<DeliveredMail> {
    let mut files: Vec<(SystemTime, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_file() {
                files.push((
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    entry.path(),
                ));
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|(_, path)| {
            // A file may go from new/ to cur/ between listing and reading.
            let raw = fs::read(&path).ok()?;
            Some(DeliveredMail { path, raw })
        })
        .collect()
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

// --- Postfix ------------------------------------------------------------------

/// A private Postfix instance: listens on 127.0.0.1 on a port of its own,
/// accepts mail from 127.0.0.0/8 for its domains (any local part) and
/// delivers every recipient into one Maildir ([`Postfix::maildir`]).
///
/// Mail for any other domain is refused at RCPT with `554 5.7.1 Relay
/// access denied`; nothing ever leaves the instance. Postfix adds
/// `Return-Path`, `X-Original-To`, `Delivered-To` and `Received`, and a
/// `Message-Id` and `Date` (in `postfix-test.invalid`) when the message has
/// none. Its log is [`Postfix::log`].
///
/// Dropping it stops Postfix and removes its directory (config, queue,
/// Maildir and log).
pub struct Postfix {
    dir: TempDir,
    port: PortReservation,
    domains: Vec<String>,
    /// In the SMTP greeting, to know the instance that answers is this one.
    token: String,
    master_pid: Option<i32>,
    /// What it offers beyond plain SMTP.
    options: PostfixBuilder,
    /// The implicit-TLS port, if any.
    smtps_port: Option<PortReservation>,
    /// The CA its certificate comes from, if it speaks TLS.
    ca: Option<TestCa>,
}

/// A [`Postfix`] to start, with what it offers beyond plain SMTP:
/// [`Postfix::builder`]. Without any option it is the plain instance of
/// [`Postfix::start_for`].
#[derive(Debug, Clone, Default)]
pub struct PostfixBuilder {
    domains: Vec<String>,
    starttls: bool,
    require_tls: bool,
    implicit_tls: bool,
    users: Vec<(String, String)>,
}

impl PostfixBuilder {
    /// Offers STARTTLS (`smtpd_tls_security_level = may`) with a
    /// certificate for `127.0.0.1` and `localhost` from its own [`TestCa`]
    /// ([`Postfix::ca_file`]).
    pub fn starttls(mut self) -> Self {
        self.starttls = true;
        self
    }

    /// Offers STARTTLS and takes no mail without it
    /// (`smtpd_tls_security_level = encrypt`: MAIL before STARTTLS gets
    /// `530 5.7.0 Must issue a STARTTLS command first`).
    pub fn require_tls(mut self) -> Self {
        self.starttls = true;
        self.require_tls = true;
        self
    }

    /// Also listens on a second port in implicit-TLS mode
    /// (`smtpd_tls_wrappermode = yes`): [`Postfix::smtps_url`].
    pub fn implicit_tls(mut self) -> Self {
        self.implicit_tls = true;
        self
    }

    /// Takes mail only from clients that authenticated (AUTH PLAIN or
    /// LOGIN through Cyrus SASL and a private sasldb), and adds `user`
    /// with `password`; may be called again for more users. A client that
    /// did not authenticate gets `554 5.7.1` at RCPT. AUTH is offered with
    /// or without TLS.
    pub fn auth_user(mut self, user: &str, password: &str) -> Self {
        self.users.push((user.to_owned(), password.to_owned()));
        self
    }

    /// Starts it; panics (with Postfix's log) if it does not come up.
    pub fn start(self) -> Postfix {
        assert!(!self.domains.is_empty(), "a Postfix needs a domain");
        assert!(
            is_root(),
            "a private Postfix needs root (its daemons switch to the postfix user): run the \
             mail-server tests as root, as scripts/test.sh does"
        );
        postfix_program("postfix");
        let dir = server_dir("leak-postfix-");
        let token = dir
            .path()
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("leak-postfix")
            .to_owned();
        let tls = self.starttls || self.implicit_tls;
        let ca = tls.then(|| TestCa::new(&dir.path().join("tls")));
        let mut postfix = Postfix {
            dir,
            port: PortReservation::new(),
            domains: self.domains.clone(),
            token,
            master_pid: None,
            smtps_port: self.implicit_tls.then(PortReservation::new),
            options: self,
            ca,
        };
        postfix.configure();
        postfix.launch();
        postfix
    }
}

impl Postfix {
    /// Starts an instance for `domain`; panics (with Postfix's log) if it
    /// does not come up.
    pub fn start(domain: &str) -> Self {
        Self::start_for(&[domain])
    }

    /// Starts an instance that accepts mail for each of `domains`.
    pub fn start_for(domains: &[&str]) -> Self {
        assert!(!domains.is_empty(), "Postfix::start_for needs a domain");
        Self::builder(domains).start()
    }

    /// An instance for `domains` to configure (TLS, AUTH) before
    /// [`PostfixBuilder::start`].
    pub fn builder(domains: &[&str]) -> PostfixBuilder {
        PostfixBuilder {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            ..PostfixBuilder::default()
        }
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port.port
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port())
    }

    /// The implicit-TLS port ([`PostfixBuilder::implicit_tls`]); panics
    /// without one.
    pub fn smtps_port(&self) -> u16 {
        self.smtps_port
            .as_ref()
            .map(|p| p.port)
            .expect("this Postfix was not built with implicit_tls()")
    }

    /// `smtps://127.0.0.1:PORT` ([`PostfixBuilder::implicit_tls`]).
    pub fn smtps_url(&self) -> String {
        format!("smtps://127.0.0.1:{}", self.smtps_port())
    }

    /// The PEM file of the CA its TLS certificate comes from; panics if it
    /// speaks no TLS.
    pub fn ca_file(&self) -> PathBuf {
        self.ca
            .as_ref()
            .map(TestCa::ca_file)
            .expect("this Postfix was not built with TLS")
    }

    /// The domains it accepts mail for.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Its directory: `etc/` (config; `etc/sasl/` with AUTH), `queue/`,
    /// `data/`, `mail/`, `maillog`, `postfix-start.out` (what `postfix
    /// start` printed) and `tls/` (with TLS: [`TestCa`]'s files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Maildir every message is delivered into (`new/`, `cur/`, `tmp/`;
    /// it appears with the first delivery).
    pub fn maildir(&self) -> PathBuf {
        self.dir().join("mail/catchall")
    }

    /// The messages delivered so far (in `new/` and `cur/`), oldest first.
    pub fn messages(&self) -> Vec<DeliveredMail> {
        let maildir = self.maildir();
        read_mail_files(&[maildir.join("new"), maildir.join("cur")])
    }

    /// Waits until at least `n` messages were delivered and returns them
    /// all; panics with Postfix's log after `timeout`. Blocks the thread:
    /// see [`Postfix::wait_for_messages_async`].
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<DeliveredMail> {
        wait_for(n, timeout, || self.messages(), || self.log_context())
    }

    /// [`Postfix::wait_for_messages`] for async tests: sleeps with tokio
    /// between looks, so the runtime can go on running the code under test.
    pub async fn wait_for_messages_async(&self, n: usize, timeout: Duration) -> Vec<DeliveredMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.messages();
            if found.len() >= n {
                return found;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {n} message(s), got {}\n{}",
                    found.len(),
                    self.log_context()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Postfix's log so far (`maillog_file`).
    pub fn log(&self) -> String {
        read_lossy(&self.dir().join("maillog"))
    }

    /// Whether its `master` process is running.
    pub fn is_running(&self) -> bool {
        self.master_pid.is_some_and(process_alive)
    }

    /// Stops Postfix (idempotent). What it delivered stays readable until
    /// it is dropped, and the port stays reserved for [`Postfix::restart`].
    /// Connections to the port are refused meanwhile.
    pub fn stop(&mut self) {
        let Some(pid) = self.master_pid.take() else {
            return;
        };
        let _ = Command::new(postfix_program("postfix"))
            .arg("-c")
            .arg(self.config_dir())
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if process_alive(pid) {
            // The master leads its process group (its daemons): kill it all.
            // Only while the master lives, so the group is surely Postfix's.
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Starts it again on the same port after [`Postfix::stop`] (a no-op
    /// while it runs), with its queue and Maildir as they were.
    pub fn restart(&mut self) {
        if self.master_pid.is_none() {
            self.launch();
        }
    }

    /// Measures how many messages per second it accepts from `smtp-source`
    /// (to `bench@<first domain>`); see [`smtp_source_rate_to`].
    pub fn smtp_source_rate(&self, messages: usize, sessions: usize) -> f64 {
        let recipient = format!("bench@{}", self.domains[0]);
        smtp_source_rate_to(self.port(), messages, sessions, &recipient)
    }

    fn config_dir(&self) -> PathBuf {
        self.dir().join("etc")
    }

    fn log_context(&self) -> String {
        format!(
            "Postfix in {} (port {}) logged:\n{}",
            self.dir().display(),
            self.port(),
            self.log()
        )
    }

    /// Writes `etc/main.cf` and `etc/master.cf` and makes the Maildir base.
    fn configure(&self) {
        let dir = self.dir();
        let etc = self.config_dir();
        let mail = dir.join("mail");
        // queue/ holds the subdirectories and data/ that `postfix start`
        // makes (post-install create-missing) with Postfix's owners and modes.
        for path in [&etc, &mail, &dir.join("queue")] {
            fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        }
        std::os::unix::fs::chown(&mail, Some(MAILDIR_OWNER), Some(MAILDIR_OWNER))
            .unwrap_or_else(|e| panic!("chown {}: {e}", mail.display()));
        let dir = dir.display();
        let domains = self.domains.join(", ");
        let token = &self.token;
        let main_cf = format!(
            "# A private Postfix for Leak's tests (tests/src/mail.rs).
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
syslog_name = {token}
myhostname = postfix-test.invalid
mydomain = invalid
smtpd_banner = $myhostname ESMTP {token}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery in this test instance
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {dir}/mail
virtual_mailbox_maps = static:catchall/
virtual_uid_maps = static:{MAILDIR_OWNER}
virtual_gid_maps = static:{MAILDIR_OWNER}
virtual_mailbox_limit = 0
smtpd_relay_restrictions = {relay}
default_transport = error:5.7.1 no mail leaves this test instance
relay_transport = error:5.7.1 no mail leaves this test instance
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0
in_flow_delay = 0
biff = no
append_dot_mydomain = no
{extra}",
            relay = if self.options.users.is_empty() {
                "reject_unauth_destination"
            } else {
                "permit_sasl_authenticated, reject"
            },
            extra = self.security_cf(),
        );
        let port = self.port();
        // Only what a Maildir sink needs, chroot off everywhere, no TLS.
        let master_cf = format!(
            "# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"
        );
        let mut master_cf = master_cf;
        if self.ca.is_some() {
            master_cf.push_str("tlsmgr     unix  -       -       n       1000?   1       tlsmgr\n");
        }
        if let Some(smtps) = &self.smtps_port {
            master_cf.push_str(&format!(
                "127.0.0.1:{} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes \
                 -o smtpd_tls_security_level=encrypt\n",
                smtps.port
            ));
        }
        if !self.options.users.is_empty() {
            self.make_sasldb();
        }
        // Postfix reads a config file again, 300 ms later, for as long as it
        // was modified less than a second ago (util/load_file.c, against
        // half-written files): a fresh main.cf would cost about 2 s at
        // start. Dated a minute back, it is read once.
        let past = SystemTime::now() - Duration::from_secs(60);
        for (name, text) in [("main.cf", main_cf), ("master.cf", master_cf)] {
            let path = etc.join(name);
            fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(past))
                .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
        }
    }

    /// The `main.cf` lines for TLS and AUTH (none for a plain instance).
    fn security_cf(&self) -> String {
        let dir = self.dir().display();
        let mut cf = String::new();
        if let Some(ca) = &self.ca {
            let level = if self.options.require_tls {
                "encrypt"
            } else if self.options.starttls {
                "may"
            } else {
                // Implicit TLS only: the plain port offers no STARTTLS.
                "none"
            };
            cf.push_str(&format!(
                "smtpd_tls_security_level = {level}
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_tls_session_cache_database =
",
                cert = ca.server_cert_file().display(),
                key = ca.server_key_file().display(),
            ));
        }
        if !self.options.users.is_empty() {
            cf.push_str(&format!(
                "smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {dir}/etc/sasl
smtpd_sasl_local_domain = {SASL_REALM}
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_tls_auth_only = no
smtpd_sasl_authenticated_header = yes
"
            ));
        }
        cf
    }

    /// Writes `etc/sasl/smtpd.conf` and the sasldb with the users,
    /// readable by the `postfix` user (smtpd runs as it). Debian's Postfix
    /// looks for `smtpd.conf` in `$config_directory/sasl/` (then in
    /// `/usr/lib/sasl/`) whatever `cyrus_sasl_config_path` says; upstream's
    /// follows `cyrus_sasl_config_path`, which names the same directory.
    fn make_sasldb(&self) {
        let sasl = self.config_dir().join("sasl");
        fs::create_dir(&sasl).unwrap_or_else(|e| panic!("mkdir {}: {e}", sasl.display()));
        let db = sasl.join("sasldb2");
        let conf = sasl.join("smtpd.conf");
        fs::write(
            &conf,
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n\
                 sasldb_path: {}\n",
                db.display()
            ),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        let saslpasswd2 = Path::new("/usr/sbin/saslpasswd2");
        assert!(
            saslpasswd2.is_file(),
            "/usr/sbin/saslpasswd2 not found: a Postfix with AUTH needs Debian's sasl2-bin and \
             libsasl2-modules; install them with scripts/lib/install-deps.sh (as root), which \
             scripts/test.sh runs"
        );
        for (user, password) in &self.options.users {
            let mut child = Command::new(saslpasswd2)
                .arg("-f")
                .arg(&db)
                .args(["-p", "-c", "-u", SASL_REALM, user])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("running saslpasswd2: {e}"));
            if let Some(mut stdin) = child.stdin.take() {
                std::io::Write::write_all(&mut stdin, password.as_bytes())
                    .expect("the password to saslpasswd2");
            }
            let output = child.wait_with_output().expect("saslpasswd2's exit");
            assert!(
                output.status.success(),
                "saslpasswd2 for {user} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let (uid, gid) = postfix_user();
        for path in [&db, &conf] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
        set_mode(&db, 0o600);
    }

    /// Runs `postfix start` and waits for this instance's greeting.
    fn launch(&mut self) {
        // Kept in the instance's directory for a look after a failure.
        let out_path = self.dir().join("postfix-start.out");
        let out = File::create(&out_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", out_path.display()));
        let status = Command::new(postfix_program("postfix"))
            .arg("-c")
            .arg(self.config_dir())
            .arg("start")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("a second handle on a file"))
            .stderr(out)
            .status()
            .unwrap_or_else(|e| panic!("running postfix start: {e}"));
        let pid_file = self.dir().join("queue/pid/master.pid");
        self.master_pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        let failure = if !status.success() {
            Some(format!("`postfix start` failed ({status})"))
        } else if self.master_pid.is_none() {
            Some(format!("no master pid in {}", pid_file.display()))
        } else {
            self.greeting_check()
                .and_then(|()| self.smtps_check())
                .err()
        };
        if let Some(failure) = failure {
            let context = format!(
                "{failure}\npostfix start printed: {}\n{}",
                read_lossy(&out_path),
                self.log_context()
            );
            self.stop();
            panic!("the test Postfix did not start: {context}");
        }
    }

    /// Waits until the implicit-TLS port (if any) listens: `master` opens
    /// every listener at start, so this is at once once it greets.
    fn smtps_check(&self) -> Result<(), String> {
        let Some(smtps) = &self.smtps_port else {
            return Ok(());
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if listening(smtps.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "nothing listens on the implicit-TLS port 127.0.0.1:{}",
            smtps.port
        ))
    }

    /// Connects until the greeting names this instance.
    fn greeting_check(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if !self.is_running() {
                return Err("its master process exited".into());
            }
            match greeting(self.port()) {
                Ok(line) if line.starts_with("220 ") && line.contains(&self.token) => {
                    return Ok(());
                }
                Ok(line) => last = format!("a greeting from another server: {line:?}"),
                Err(e) => last = format!("connecting: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no greeting on 127.0.0.1:{} after {START_TIMEOUT:?} ({last})",
            self.port()
        ))
    }
}

/// The first line a server on 127.0.0.1:`port` sends; then says QUIT.
fn greeting(port: u16) -> std::io::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let _ = std::io::Write::write_all(&mut &stream, b"QUIT\r\n");
    Ok(line.trim_end().to_owned())
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Postfix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postfix")
            .field("dir", &self.dir())
            .field("port", &self.port())
            .field("domains", &self.domains)
            .field("master_pid", &self.master_pid)
            .field("options", &self.options)
            .finish()
    }
}

// --- A throwaway CA -------------------------------------------------------------

/// A throwaway certificate authority and one server certificate it signed
/// for `127.0.0.1` and `localhost` (ECDSA P-256, valid for two days), made
/// with the `openssl` command in a directory of its own. Nothing trusts it
/// but a client told to ([`TestCa::ca_file`]).
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Makes the CA and the server certificate in `dir` (created). Panics
    /// with openssl's output when it fails, or says how to install it.
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        set_mode(dir, 0o755);
        let ext = dir.join("server.ext");
        fs::write(
            &ext,
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = IP:127.0.0.1, DNS:localhost\n",
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", ext.display()));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            dir,
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=Leak test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The CA's certificate (PEM): what a client must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate (PEM).
    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server's private key (PEM, unencrypted).
    pub fn server_key_file(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// Runs `openssl ARGS` in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("running openssl: {e} (install Debian's openssl package; scripts/test.sh does)")
        });
    assert!(
        output.status.success(),
        "openssl {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// --- Delivered mail ----------------------------------------------------------

/// One message as a server stored it: a Maildir file of a [`Postfix`]
/// (lines end in LF there) or a dump file of an [`SmtpSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredMail {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's bytes.
    pub raw: Vec<u8>,
}

impl DeliveredMail {
    /// Reads a message file.
    pub fn read(path: &Path) -> Self {
        let raw = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Self {
            path: path.to_path_buf(),
            raw,
        }
    }

    /// The header section: the bytes up to the first empty line.
    pub fn header_bytes(&self) -> &[u8] {
        let (head, _) = split_message(&self.raw);
        head
    }

    /// The body: the bytes after the first empty line, as stored.
    pub fn body_bytes(&self) -> &[u8] {
        let (_, body) = split_message(&self.raw);
        body
    }

    /// Every header field in order as (name, value): folded lines joined
    /// (CRLF/LF removed, the folding whitespace kept), the value trimmed,
    /// encoded words left as they are.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in String::from_utf8_lossy(self.header_bytes()).split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_owned(), value.to_owned()));
            }
        }
        for (_, value) in &mut fields {
            *value = value.trim().to_owned();
        }
        fields
    }

    /// The first field named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    /// Every field named `name` (case-insensitive), in order, unfolded.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .collect()
    }

    /// The `Subject`, with RFC 2047 encoded words decoded.
    pub fn subject(&self) -> Option<String> {
        let message = self.parsed();
        message.subject().map(str::to_owned)
    }

    /// The text of the message: of a single-part `text/plain` message its
    /// body with the transfer encoding (quoted-printable, base64) and the
    /// charset decoded; of a multipart one the first part of its text body
    /// (an HTML part converted to text). Panics when there is none.
    pub fn body_text(&self) -> String {
        let message = self.parsed();
        message
            .body_text(0)
            .map(|text| text.into_owned())
            .unwrap_or_else(|| {
                panic!(
                    "{} has no text body:\n{}",
                    self.path.display(),
                    String::from_utf8_lossy(&self.raw)
                )
            })
    }

    /// The whole file as text (lossy), for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| panic!("{} is not a message", self.path.display()))
    }
}

/// Splits a message at its first empty line (CRLF or LF).
fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while start < raw.len() {
        let end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| start + i + 1);
        let line = &raw[start..end];
        if line == b"\n" || line == b"\r\n" {
            return (&raw[..start], &raw[end..]);
        }
        start = end;
    }
    (raw, &[])
}

// --- smtp-sink ----------------------------------------------------------------

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

// --- smtp-source --------------------------------------------------------------

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
/// default small message, timed from start to exit. For a [`Postfix`] this
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
