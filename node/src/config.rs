//! The node's configuration: one TOML file, every value overridable.
//!
//! Values come from, in increasing precedence: the built-in defaults, the
//! TOML file (`leak-node init` writes a commented one), `LEAK_<SECTION>__<KEY>`
//! environment variables (for example `LEAK_LIMITS__GLOBAL_QUEUE=8192`) and
//! `--set section.key=value` flags. Unknown keys are errors everywhere.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use figment::{
    Figment,
    providers::{Env, Format as _, Serialized, Toml},
};
use leak_protocol::federation;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity, addresses and roles.
    pub node: NodeConfig,
    /// Key epochs.
    pub epochs: EpochConfig,
    /// Limits that keep the node bounded.
    pub limits: LimitsConfig,
    /// Reply mailboxes.
    pub mailbox: MailboxConfig,
    /// Directory freshness.
    pub directory: DirectoryConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The exit role: email delivery.
    pub exit: ExitConfig,
    /// The shared moderation policy.
    pub policy: PolicyConfig,
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A signed policy file (`leak-node policy sign` writes one); empty
    /// means the policy built into this release.
    pub file: String,
    /// The policy maintainers' Ed25519 public keys (hex) this node trusts.
    pub trusted_keys: Vec<String>,
    /// How many of those keys must have signed a policy.
    pub threshold: usize,
}

/// How the exit hands email on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `.eml` files in a directory (local federations, demos).
    File,
    /// SMTP to the operator's smarthost.
    Smtp,
}

/// `[exit]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitConfig {
    /// The mail domain the exit sends from (published in its descriptor).
    pub domain: String,
    /// The `From:` address; empty means `leak@DOMAIN`.
    pub from: String,
    /// Where recipients report abuse (named in every email's footer); empty
    /// means `abuse@DOMAIN`.
    pub abuse_address: String,
    /// Address of the opt-out and report endpoint (HTTP); put it behind an
    /// HTTPS reverse proxy and name that in `public_url`.
    pub http_listen: String,
    /// The base URL of the endpoint as recipients reach it, e.g.
    /// `https://leak.example.org`; empty means `http://HTTP_LISTEN`.
    pub public_url: String,
    /// "file" or "smtp".
    pub transport: Transport,
    /// Directory for the file transport; empty means `DATA_DIR/outbox`.
    pub file_dir: String,
    /// The smarthost: `smtp://host:587?tls=required` (STARTTLS),
    /// `smtps://host:465` (implicit TLS), `smtp://127.0.0.1:25` (plain, for
    /// loopback only); a user name may be given as `smtp://user@host`.
    pub smtp_url: String,
    /// File holding the SMTP password (mode 0600); empty for no AUTH.
    pub smtp_password_file: String,
    /// A PEM file of CA certificates trusted for the smarthost's TLS
    /// certificate besides the default (Mozilla) roots, for a smarthost with
    /// a private CA; empty for none.
    pub smtp_ca_file: String,
    /// Most SMTP connections kept open and used at once.
    pub smtp_connections: u32,
    /// Seconds before an SMTP command times out.
    pub smtp_timeout_secs: u64,
    /// Most leaks per recipient per UTC day, if stricter than the policy's;
    /// 0 means the policy's limit.
    pub per_recipient_per_day: u32,
    /// A file of local rules (the policy format) applied on top of the
    /// shared policy; empty for none.
    pub local_rules: String,
    /// First retry after a temporary failure, in seconds; it doubles per
    /// attempt (with jitter) up to `retry_max_secs`.
    pub retry_initial_secs: u64,
    /// Longest wait between two attempts, in seconds.
    pub retry_max_secs: u64,
    /// A leak not delivered this many seconds after acceptance ends as
    /// `Bounced`.
    pub lifetime_secs: u64,
    /// How long a message id is remembered so a retransmission is not
    /// delivered twice, in seconds.
    pub dedup_secs: u64,
    /// Highest sending rate (emails per second).
    pub max_rate: f64,
    /// Lowest rate a deferral (421, 4.7.x) may slow sending to.
    pub min_rate: f64,
    /// DKIM selector; empty disables signing (needs the `dkim` feature).
    pub dkim_selector: String,
    /// DKIM private key file (PEM: RSA in PKCS#1, or an Ed25519 seed in
    /// base64 as in RFC 8463).
    pub dkim_key_file: String,
    /// "rsa" or "ed25519".
    pub dkim_algorithm: String,
}

impl ExitConfig {
    fn defaults() -> Self {
        Self {
            domain: String::new(),
            from: String::new(),
            abuse_address: String::new(),
            http_listen: "127.0.0.1:8025".into(),
            public_url: String::new(),
            transport: Transport::File,
            file_dir: String::new(),
            smtp_url: String::new(),
            smtp_password_file: String::new(),
            smtp_ca_file: String::new(),
            smtp_connections: 4,
            smtp_timeout_secs: 60,
            per_recipient_per_day: 0,
            local_rules: String::new(),
            retry_initial_secs: 60,
            retry_max_secs: 3600,
            lifetime_secs: 5 * 86_400,
            dedup_secs: 7 * 86_400,
            max_rate: 20.0,
            min_rate: 0.1,
            dkim_selector: String::new(),
            dkim_key_file: String::new(),
            dkim_algorithm: "ed25519".into(),
        }
    }
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the identity key and the database live.
    pub data_dir: PathBuf,
    /// libp2p addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Addresses to publish in the descriptor; empty means the listen
    /// addresses (with unspecified IPs replaced by what the OS reports).
    pub external_addresses: Vec<Multiaddr>,
    /// Nodes to contact at start, as `/ip4/../tcp/../p2p/PEERID`.
    pub bootstrap: Vec<Multiaddr>,
    /// The operator family: every node of one operator uses the same name.
    pub family: String,
    /// Roles: "relay" (and, later, "exit").
    pub roles: Vec<Role>,
}

/// A node role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Forward packets and keep reply mailboxes.
    Relay,
    /// Deliver leaks by email.
    Exit,
}

/// `[epochs]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochConfig {
    /// Seconds per mix-key epoch; epochs start at multiples of this since the
    /// Unix epoch (UTC). Every node of a federation uses the same value.
    pub period_secs: u64,
    /// How many future epochs' keys to generate and publish ahead.
    pub keys_ahead: u32,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most simultaneous connections.
    pub max_connections: u32,
    /// Most connections from or to one peer.
    pub max_connections_per_peer: u32,
    /// Most packets waiting for processing from one peer.
    pub peer_queue: usize,
    /// Most packets waiting for processing in all.
    pub global_queue: usize,
    /// Most packets held for their mixing delay.
    pub held_packets: usize,
    /// Most packets waiting to be written to one next hop.
    pub link_queue: usize,
    /// Longest mixing delay accepted, in milliseconds; longer ones are dropped.
    pub max_delay_ms: u32,
    /// Seconds an idle connection stays open.
    pub idle_timeout_secs: u64,
}

/// `[mailbox]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxConfig {
    /// Seconds a reply is kept before it is deleted unread.
    pub ttl_secs: u64,
    /// Most replies kept per mailbox.
    pub max_per_mailbox: u32,
    /// Most replies kept in all.
    pub max_total: u64,
}

/// `[directory]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// A descriptor older than this many seconds is stale and dropped.
    pub max_age_secs: u64,
    /// A descriptor dated more than this many seconds ahead is refused.
    pub max_clock_skew_secs: u64,
    /// Most descriptors kept.
    pub max_nodes: usize,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`/metrics`); empty to disable.
    pub listen: String,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace: for Leak's own code. Third-party
    /// libraries never log (their messages can carry peer addresses).
    pub level: String,
}

impl Config {
    /// The defaults, with `data_dir` as given.
    pub fn defaults(data_dir: PathBuf) -> Self {
        Self {
            node: NodeConfig {
                data_dir,
                listen: vec![default_listen()],
                external_addresses: Vec::new(),
                bootstrap: Vec::new(),
                family: String::new(),
                roles: vec![Role::Relay],
            },
            epochs: EpochConfig {
                period_secs: federation::EPOCH_PERIOD_SECS,
                keys_ahead: 2,
            },
            limits: LimitsConfig {
                max_connections: 512,
                max_connections_per_peer: 2,
                peer_queue: 512,
                global_queue: 8192,
                held_packets: 16384,
                link_queue: 1024,
                max_delay_ms: federation::MAX_HOP_DELAY_MS,
                idle_timeout_secs: 600,
            },
            mailbox: MailboxConfig {
                ttl_secs: federation::MAILBOX_LIFETIME_SECS,
                max_per_mailbox: 8,
                max_total: 100_000,
            },
            directory: DirectoryConfig {
                max_age_secs: federation::DESCRIPTOR_MAX_AGE_SECS,
                max_clock_skew_secs: federation::MAX_CLOCK_SKEW_SECS,
                max_nodes: 10_000,
            },
            metrics: MetricsConfig {
                listen: "127.0.0.1:9464".into(),
            },
            log: LogConfig {
                level: "info".into(),
            },
            exit: ExitConfig::defaults(),
            policy: PolicyConfig {
                file: String::new(),
                trusted_keys: Vec::new(),
                threshold: 1,
            },
        }
    }

    /// Loads `path`, then environment overrides, then `--set` overrides.
    pub fn load(path: &std::path::Path, sets: &[String]) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        // Defaults first, so a file written by an older version, or by hand,
        // need not name every key; data_dir defaults to the file's directory.
        let data_dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
        let mut figment = Figment::from(Serialized::defaults(Self::defaults(data_dir)))
            .merge(Toml::string(&text))
            .merge(
                Env::prefixed("LEAK_")
                    .filter(|key| key.as_str().contains("__"))
                    .split("__"),
            );
        for set in sets {
            let (key, value) = set
                .split_once('=')
                .with_context(|| format!("--set {set:?}: expected section.key=value"))?;
            figment = figment.merge(Serialized::global(key.trim(), parse_value(value.trim())));
        }
        let config: Self = figment.extract().map_err(|e| {
            // Name the key and the problem; figment's own Display also names
            // the provider's source location, which means nothing to an operator.
            let problems: Vec<String> = e
                .into_iter()
                .map(|e| match e.path.join(".") {
                    key if key.is_empty() => e.kind.to_string(),
                    key => format!("{key}: {}", e.kind),
                })
                .collect();
            anyhow::anyhow!(
                "invalid configuration ({} with LEAK_* and --set overrides): {}",
                path.display(),
                problems.join("; ")
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=366 * 86_400).contains(&self.epochs.period_secs),
            "epochs.period_secs must be between 1 and 31622400"
        );
        anyhow::ensure!(
            (1..=6).contains(&self.epochs.keys_ahead),
            "epochs.keys_ahead must be between 1 and 6"
        );
        anyhow::ensure!(
            self.directory.max_age_secs >= 3 && self.directory.max_nodes >= 1,
            "directory.max_age_secs must be at least 3 and directory.max_nodes at least 1"
        );
        anyhow::ensure!(
            self.mailbox.ttl_secs <= 366 * 86_400,
            "mailbox.ttl_secs must be at most a year"
        );
        anyhow::ensure!(
            !self.node.listen.is_empty(),
            "node.listen must name at least one address"
        );
        anyhow::ensure!(
            !self.node.roles.is_empty(),
            "node.roles must name at least one role"
        );
        anyhow::ensure!(
            self.limits.peer_queue >= 1 && self.limits.global_queue >= 1,
            "queue limits must be at least 1"
        );
        anyhow::ensure!(
            self.limits.held_packets >= 1 && self.limits.link_queue >= 1,
            "queue limits must be at least 1"
        );
        anyhow::ensure!(
            self.limits.max_connections >= 1,
            "limits.max_connections must be at least 1"
        );
        anyhow::ensure!(
            self.node.family.len() <= 128,
            "node.family is at most 128 bytes"
        );
        self.metrics_addr()?;
        if self.is_exit() {
            self.validate_exit()?;
        }
        anyhow::ensure!(
            self.log.level.trim().parse::<tracing::Level>().is_ok(),
            "log.level {:?} must be one of error, warn, info, debug, trace",
            self.log.level
        );
        Ok(())
    }

    /// Whether the node has the exit role.
    pub fn is_exit(&self) -> bool {
        self.node.roles.contains(&Role::Exit)
    }

    fn validate_exit(&self) -> anyhow::Result<()> {
        let e = &self.exit;
        anyhow::ensure!(
            !e.domain.trim().is_empty(),
            "exit.domain must be set for the exit role (the domain mail is sent from)"
        );
        leak_protocol::Recipient::parse(&self.exit_from())
            .map_err(|err| anyhow::anyhow!("exit.from {:?}: {err}", self.exit_from()))?;
        leak_protocol::Recipient::parse(&self.exit_abuse_address()).map_err(|err| {
            anyhow::anyhow!("exit.abuse_address {:?}: {err}", self.exit_abuse_address())
        })?;
        self.exit_http_addr()?;
        if e.transport == Transport::Smtp {
            anyhow::ensure!(
                !e.smtp_url.trim().is_empty(),
                "exit.smtp_url must be set for the smtp transport"
            );
        }
        anyhow::ensure!(
            e.smtp_connections >= 1,
            "exit.smtp_connections must be at least 1"
        );
        anyhow::ensure!(
            e.retry_initial_secs >= 1 && e.retry_max_secs >= e.retry_initial_secs,
            "exit.retry_initial_secs must be at least 1 and at most exit.retry_max_secs"
        );
        anyhow::ensure!(
            e.min_rate > 0.0 && e.max_rate >= e.min_rate && e.max_rate.is_finite(),
            "exit.min_rate must be positive and at most exit.max_rate"
        );
        anyhow::ensure!(
            matches!(e.dkim_algorithm.as_str(), "rsa" | "ed25519"),
            "exit.dkim_algorithm must be \"rsa\" or \"ed25519\""
        );
        if !e.dkim_selector.is_empty() {
            anyhow::ensure!(
                cfg!(feature = "dkim"),
                "exit.dkim_selector is set but this leak-node was built without the `dkim` feature"
            );
            anyhow::ensure!(
                !e.dkim_key_file.is_empty(),
                "exit.dkim_key_file must be set when exit.dkim_selector is"
            );
        }
        Ok(())
    }

    /// The exit's `From:` address.
    pub fn exit_from(&self) -> String {
        if self.exit.from.trim().is_empty() {
            format!("leak@{}", self.exit.domain.trim())
        } else {
            self.exit.from.trim().to_owned()
        }
    }

    /// Where recipients report abuse.
    pub fn exit_abuse_address(&self) -> String {
        if self.exit.abuse_address.trim().is_empty() {
            format!("abuse@{}", self.exit.domain.trim())
        } else {
            self.exit.abuse_address.trim().to_owned()
        }
    }

    /// The opt-out endpoint's listen address.
    pub fn exit_http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.exit.http_listen.parse().with_context(|| {
            format!(
                "exit.http_listen {:?} is not an address:port",
                self.exit.http_listen
            )
        })
    }

    /// The file transport's directory.
    pub fn exit_file_dir(&self) -> PathBuf {
        if self.exit.file_dir.trim().is_empty() {
            self.node.data_dir.join("outbox")
        } else {
            PathBuf::from(self.exit.file_dir.trim())
        }
    }

    /// The exit's queue of accepted leaks (one file each, scrubbed on
    /// delivery).
    pub fn exit_queue_dir(&self) -> PathBuf {
        self.node.data_dir.join("exit-queue")
    }

    /// The operator's control socket (`leak-node queue`).
    pub fn admin_socket_path(&self) -> PathBuf {
        self.node.data_dir.join("admin.sock")
    }

    /// The metrics address, if enabled.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.metrics.listen.trim().is_empty() {
            return Ok(None);
        }
        self.metrics.listen.parse().map(Some).with_context(|| {
            format!(
                "metrics.listen {:?} is not an address:port",
                self.metrics.listen
            )
        })
    }

    /// The epoch period.
    pub fn epoch_period(&self) -> Duration {
        Duration::from_secs(self.epochs.period_secs)
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.node.data_dir.join("node.redb")
    }

    /// The identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.node.data_dir.join(crate::identity::IDENTITY_FILE)
    }

    /// The commented TOML that `leak-node init` writes.
    pub fn to_commented_toml(&self) -> String {
        let list = |v: &[Multiaddr]| {
            let items: Vec<String> = v.iter().map(|a| format!("{:?}", a.to_string())).collect();
            format!("[{}]", items.join(", "))
        };
        let roles: Vec<String> = self
            .node
            .roles
            .iter()
            .map(|r| match r {
                Role::Relay => "\"relay\"".to_owned(),
                Role::Exit => "\"exit\"".to_owned(),
            })
            .collect();
        let c = self;
        let trusted_keys = format!(
            "[{}]",
            c.policy
                .trusted_keys
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        format!(
            r#"# leak-node configuration.
# Every value can be overridden by an environment variable
# LEAK_<SECTION>__<KEY> (e.g. LEAK_LIMITS__GLOBAL_QUEUE=8192) or by
# `leak-node run --set section.key=value`. Unknown keys are errors.

[node]
# Where the identity key (identity.key, mode 0600) and the database
# (node.redb: mix keys, replay tags, mailboxes) live.
data_dir = {data_dir:?}
# libp2p addresses to listen on (TCP; Noise; Yamux).
listen = {listen}
# Addresses to publish in this node's descriptor; empty = the listen addresses.
external_addresses = {external}
# Nodes to contact at start: /ip4/ADDR/tcp/PORT/p2p/PEERID.
bootstrap = {bootstrap}
# Operator family: give every node you run the same name, so no path uses
# two of them.
family = {family:?}
# "relay" forwards packets and keeps reply mailboxes; "exit" also delivers
# leaks by email (see [exit]).
roles = [{roles}]

[epochs]
# Seconds per mix-key epoch (UTC, from the Unix epoch). Must be the same on
# every node of a federation. Keys of the current and previous epoch are
# accepted; older secrets are deleted (forward secrecy).
period_secs = {period}
# Future epochs whose keys are generated and published ahead.
keys_ahead = {ahead}

[limits]
# Most simultaneous connections, and per peer.
max_connections = {max_conn}
max_connections_per_peer = {max_conn_peer}
# Packets waiting for processing: per peer, and in all. When full, the
# newest packet of the peer with the longest queue is dropped.
peer_queue = {peer_queue}
global_queue = {global_queue}
# Packets held for their mixing delay.
held_packets = {held}
# Packets waiting to be written to one next hop.
link_queue = {link_queue}
# Longest mixing delay accepted (ms); packets asking for more are dropped.
max_delay_ms = {max_delay}
# Seconds an idle connection stays open (relay links are long-lived).
idle_timeout_secs = {idle}

[mailbox]
# Reply payloads held for clients: seconds kept, most per mailbox, most in all.
ttl_secs = {ttl}
max_per_mailbox = {per_mailbox}
max_total = {mailbox_total}

[directory]
# Descriptors older than max_age_secs are dropped; ones dated more than
# max_clock_skew_secs ahead are refused; at most max_nodes are kept.
max_age_secs = {max_age}
max_clock_skew_secs = {skew}
max_nodes = {max_nodes}

[metrics]
# Prometheus endpoint (http://ADDR/metrics); "" disables it. Keep it on
# loopback or behind a firewall.
listen = {metrics:?}

[log]
# error, warn, info, debug or trace, for Leak's own code; third-party
# libraries never log, since their messages can carry peer addresses. Logs
# never contain IP addresses, recipients or message text, at any level.
level = {level:?}

[exit]
# Used with the "exit" role. The mail domain the exit sends from; publish
# SPF, DKIM and DMARC records for it (README: "Running an exit").
domain = {domain:?}
# From: address ("" = leak@DOMAIN) and the abuse address named in every
# email ("" = abuse@DOMAIN).
from = {from:?}
abuse_address = {abuse:?}
# The opt-out and report-abuse endpoint (plain HTTP: put it behind an HTTPS
# reverse proxy) and its public base URL ("" = http://HTTP_LISTEN).
http_listen = {http_listen:?}
public_url = {public_url:?}
# "file" writes .eml files into file_dir ("" = DATA_DIR/outbox);
# "smtp" hands mail to smtp_url: smtp://host:587?tls=required (STARTTLS),
# smtps://host:465 (implicit TLS), smtp://127.0.0.1:25 (plain, loopback only),
# with smtp://user@host and smtp_password_file for AUTH (PLAIN or LOGIN).
# TLS trusts Mozilla's roots, plus the CA certificates (PEM) in smtp_ca_file
# ("" = none) for a smarthost with a private CA. A rejected AUTH or a failed
# TLS check never bounces a leak: it stays queued, and the log says why.
transport = {transport:?}
file_dir = {file_dir:?}
smtp_url = {smtp_url:?}
smtp_password_file = {smtp_password_file:?}
smtp_ca_file = {smtp_ca_file:?}
smtp_connections = {smtp_connections}
smtp_timeout_secs = {smtp_timeout}
# Leaks per recipient per UTC day, if stricter than the policy (0 = policy).
per_recipient_per_day = {per_recipient}
# Extra local rules in the policy format ("" = none).
local_rules = {local_rules:?}
# Temporary failures retry after retry_initial_secs, doubling (with jitter)
# up to retry_max_secs; a leak undelivered after lifetime_secs bounces.
retry_initial_secs = {retry_initial}
retry_max_secs = {retry_max}
lifetime_secs = {lifetime}
# Message ids are remembered this long, so retransmissions are delivered once.
dedup_secs = {dedup}
# Sending rate (emails per second): at most max_rate; a deferral (421, 4.7.x)
# halves it, down to min_rate, and it recovers slowly with each success.
max_rate = {max_rate:?}
min_rate = {min_rate:?}
# DKIM signing (build with --features dkim): selector ("" = off), key file
# (PEM RSA key or base64 Ed25519 seed) and algorithm ("rsa" or "ed25519").
dkim_selector = {dkim_selector:?}
dkim_key_file = {dkim_key_file:?}
dkim_algorithm = {dkim_algorithm:?}

[policy]
# The shared moderation policy. "" = the policy built into this release;
# otherwise a signed policy file, used if at least `threshold` of the
# maintainers' keys in trusted_keys (hex Ed25519 public keys) signed it and it
# is not older than the built-in one.
file = {policy_file:?}
trusted_keys = {trusted_keys}
threshold = {threshold}
"#,
            data_dir = c.node.data_dir.display().to_string(),
            listen = list(&c.node.listen),
            external = list(&c.node.external_addresses),
            bootstrap = list(&c.node.bootstrap),
            family = c.node.family,
            roles = roles.join(", "),
            period = c.epochs.period_secs,
            ahead = c.epochs.keys_ahead,
            max_conn = c.limits.max_connections,
            max_conn_peer = c.limits.max_connections_per_peer,
            peer_queue = c.limits.peer_queue,
            global_queue = c.limits.global_queue,
            held = c.limits.held_packets,
            link_queue = c.limits.link_queue,
            max_delay = c.limits.max_delay_ms,
            idle = c.limits.idle_timeout_secs,
            ttl = c.mailbox.ttl_secs,
            per_mailbox = c.mailbox.max_per_mailbox,
            mailbox_total = c.mailbox.max_total,
            max_age = c.directory.max_age_secs,
            skew = c.directory.max_clock_skew_secs,
            max_nodes = c.directory.max_nodes,
            metrics = c.metrics.listen,
            level = c.log.level,
            domain = c.exit.domain,
            from = c.exit.from,
            abuse = c.exit.abuse_address,
            http_listen = c.exit.http_listen,
            public_url = c.exit.public_url,
            transport = match c.exit.transport {
                Transport::File => "file",
                Transport::Smtp => "smtp",
            },
            file_dir = c.exit.file_dir,
            smtp_url = c.exit.smtp_url,
            smtp_password_file = c.exit.smtp_password_file,
            smtp_ca_file = c.exit.smtp_ca_file,
            smtp_connections = c.exit.smtp_connections,
            smtp_timeout = c.exit.smtp_timeout_secs,
            per_recipient = c.exit.per_recipient_per_day,
            local_rules = c.exit.local_rules,
            retry_initial = c.exit.retry_initial_secs,
            retry_max = c.exit.retry_max_secs,
            lifetime = c.exit.lifetime_secs,
            dedup = c.exit.dedup_secs,
            max_rate = c.exit.max_rate,
            min_rate = c.exit.min_rate,
            dkim_selector = c.exit.dkim_selector,
            dkim_key_file = c.exit.dkim_key_file,
            dkim_algorithm = c.exit.dkim_algorithm,
            policy_file = c.policy.file,
            trusted_keys = trusted_keys,
            threshold = c.policy.threshold,
        )
    }
}

fn default_listen() -> Multiaddr {
    "/ip4/0.0.0.0/tcp/4700"
        .parse()
        .unwrap_or_else(|_| Multiaddr::empty())
}

/// A `--set` value: TOML if it parses as a TOML value, else a plain string.
fn parse_value(text: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct Wrapper {
        v: toml::Value,
    }
    toml::from_str::<Wrapper>(&format!("v = {text}"))
        .map(|w| w.v)
        .unwrap_or_else(|_| toml::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, text: &str) -> PathBuf {
        let path = dir.join("leak-node.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The commented file `init` writes parses back to the same values.
    #[test]
    fn commented_template_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(dir.path().to_path_buf());
        config.node.bootstrap = vec!["/ip4/127.0.0.1/tcp/4701".parse().unwrap()];
        config.node.family = "alice's \"nodes\"".into();
        config.node.roles = vec![Role::Relay, Role::Exit];
        config.exit.domain = "leak.example".into();
        config.exit.transport = Transport::Smtp;
        config.exit.smtp_url = "smtp://relay@127.0.0.1:2525?tls=required".into();
        config.exit.smtp_password_file = "/etc/leak/smtp-password".into();
        config.exit.smtp_ca_file = "/etc/leak/smarthost-ca.pem".into();
        config.exit.max_rate = 7.5;
        let path = write(dir.path(), &config.to_commented_toml());
        assert_eq!(Config::load(&path, &[]).unwrap(), config);
    }

    /// A hand-written file naming only what differs from the defaults.
    #[test]
    fn missing_keys_take_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[limits]\nglobal_queue = 99\n");
        let loaded = Config::load(&path, &[]).unwrap();
        let mut expected = Config::defaults(dir.path().to_path_buf());
        expected.limits.global_queue = 99;
        assert_eq!(loaded, expected);
    }

    #[test]
    fn set_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::defaults(dir.path().to_path_buf());
        let path = write(dir.path(), &config.to_commented_toml());
        let loaded = Config::load(
            &path,
            &[
                "limits.global_queue=77".into(),
                "node.listen=[\"/ip4/127.0.0.1/tcp/9\"]".into(),
                "node.family=ops team".into(),
                "metrics.listen=".into(),
            ],
        )
        .unwrap();
        assert_eq!(loaded.limits.global_queue, 77);
        assert_eq!(loaded.node.listen[0].to_string(), "/ip4/127.0.0.1/tcp/9");
        assert_eq!(loaded.node.family, "ops team");
        assert_eq!(loaded.metrics_addr().unwrap(), None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::defaults(dir.path().to_path_buf());
        let text = config
            .to_commented_toml()
            .replace("[limits]", "[limits]\nmax_conections = 3");
        let err = Config::load(&write(dir.path(), &text), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_conections"), "{err}");

        let text = config.to_commented_toml();
        let path = write(dir.path(), &text);
        let err = Config::load(&path, &["limits.peer_queue=many".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("peer_queue"), "{err}");
        let err = Config::load(&path, &["node.listen=[\"not an address\"]".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        let err = Config::load(&path, &["epochs.period_secs=0".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("period_secs"), "{err}");
        let err = Config::load(&dir.path().join("missing.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the config file"), "{err}");
    }
}
