//! A private Postfix per test: its own config, queue, Maildir and log
//! in a directory under `/tmp`, listening on 127.0.0.1 on a reserved port
//! ([`crate::ports`]), optionally with STARTTLS, implicit TLS (a
//! certificate from a [`TestCa`]) and Cyrus SASL AUTH.
//!
//! Postfix's daemons switch users, so this needs root and Debian's
//! `postfix` package (AUTH also `sasl2-bin` and `libsasl2-modules`).

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tempfile::TempDir;

use super::{
    DeliveredMail, START_TIMEOUT, TestCa, delivered::read_mail_files, is_root, postfix_program,
    read_lossy, server_dir, set_mode, smtp_source::smtp_source_rate_to, wait_for,
};
use crate::ports::{PortReservation, listening};

/// The uid and gid that own the Maildir (Debian's `nobody`/`nogroup`).
const MAILDIR_OWNER: u32 = 65534;

/// The Cyrus SASL realm of a [`Postfix`] with AUTH: users log in with
/// their bare names.
const SASL_REALM: &str = "leak-test";

/// How long Postfix gets to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// `base` with `extra`'s settings: a setting of `extra` replaces the
/// same one of `base` (and a later one of `extra` an earlier), instead of
/// appearing twice. Postfix would take the last one anyway, but it warns
/// of each duplicate through its logging socket, and at start, before its
/// log daemon runs, enough warnings fill that socket and hang `postfix
/// start`.
fn merge_main_cf(base: &str, extra: &str) -> String {
    fn key(line: &str) -> Option<&str> {
        let trimmed = line.trim_start();
        if line.starts_with([' ', '\t']) || trimmed.starts_with('#') {
            return None;
        }
        line.split_once('=').map(|(k, _)| k.trim())
    }
    // Settings with their continuation lines, in order.
    let mut settings: Vec<(Option<String>, String)> = Vec::new();
    for text in [base, extra] {
        for line in text.lines() {
            match key(line) {
                Some(k) => {
                    settings.retain(|(existing, _)| existing.as_deref() != Some(k));
                    settings.push((Some(k.to_owned()), format!("{line}\n")));
                }
                None => match settings.last_mut() {
                    Some((Some(_), value)) if line.starts_with([' ', '\t']) => {
                        value.push_str(line);
                        value.push('\n');
                    }
                    _ => settings.push((None, format!("{line}\n"))),
                },
            }
        }
    }
    settings.into_iter().map(|(_, text)| text).collect()
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
    mailboxes: Vec<String>,
    main_cf: String,
    master_cf: String,
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

    /// Only these local parts (at each of its domains) have a mailbox;
    /// mail to any other is refused at RCPT with `550 5.1.1` (the default:
    /// every local part goes to the one Maildir).
    pub fn mailboxes(mut self, locals: &[&str]) -> Self {
        self.mailboxes = locals.iter().map(|l| (*l).to_owned()).collect();
        self
    }

    /// Lines appended to `main.cf` (a later setting wins over the test
    /// instance's own).
    pub fn main_cf(mut self, lines: &str) -> Self {
        self.main_cf.push_str(lines);
        self.main_cf.push('\n');
        self
    }

    /// Lines appended to `master.cf` (more services, such as the `smtp`
    /// and `lmtp` clients an instance that sends mail needs).
    pub fn master_cf(mut self, lines: &str) -> Self {
        self.master_cf.push_str(lines);
        self.master_cf.push('\n');
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

    /// Changes settings of the running instance (`postconf -e`, then
    /// `postfix reload`), e.g. `["smtpd_recipient_restrictions ="]`.
    pub fn postconf(&self, settings: &[&str]) {
        let status = Command::new(postfix_program("postconf"))
            .arg("-c")
            .arg(self.config_dir())
            .arg("-e")
            .args(settings)
            .stdin(Stdio::null())
            .status()
            .expect("running postconf");
        assert!(status.success(), "postconf -e {settings:?} failed");
        // `postfix reload` only signals the master: wait until it has
        // re-read its settings, so what follows meets the new ones.
        let reloads = || self.log().matches("reload -- version").count();
        let before = reloads();
        self.run_postfix(&["reload"]);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while reloads() == before {
            assert!(
                Instant::now() < deadline,
                "postfix never logged its reload:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Tries every deferred message again now (`postqueue -f`).
    pub fn flush(&self) {
        let status = Command::new(postfix_program("postqueue"))
            .arg("-c")
            .arg(self.config_dir())
            .arg("-f")
            .stdin(Stdio::null())
            .status()
            .expect("running postqueue");
        assert!(status.success(), "postqueue -f failed:\n{}", self.log());
    }

    fn run_postfix(&self, args: &[&str]) {
        let status = Command::new(postfix_program("postfix"))
            .arg("-c")
            .arg(self.config_dir())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running postfix");
        assert!(status.success(), "postfix {args:?} failed:\n{}", self.log());
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
            "# A private Postfix for Leak's tests (tests/src/mail/postfix.rs).
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
virtual_mailbox_maps = {mailboxes}
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
            mailboxes = if self.options.mailboxes.is_empty() {
                "static:catchall/".to_owned()
            } else {
                let entries: Vec<String> = self
                    .domains
                    .iter()
                    .flat_map(|d| {
                        self.options
                            .mailboxes
                            .iter()
                            .map(move |l| format!("{l}@{d}=catchall/"))
                    })
                    .collect();
                format!("inline:{{{}}}", entries.join(", "))
            },
        );
        // The greeting names the instance (launch waits for it), whatever
        // the extra lines say.
        let extra = format!(
            "{}smtpd_banner = $myhostname ESMTP {token}\n",
            self.options.main_cf
        );
        let main_cf = merge_main_cf(&main_cf, &extra);
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
        master_cf.push_str(&self.options.master_cf);
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
