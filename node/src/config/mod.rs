//! The node's configuration: one TOML file, every value overridable.
//!
//! Values come from, in increasing precedence: the built-in defaults, the
//! TOML file, `LEAK_<SECTION>__<KEY>` environment variables (for example
//! `LEAK_LIMITS__GLOBAL_QUEUE=8192`) and `--set section.key=value` flags.
//! Unknown keys are errors everywhere.
//!
//! Every key is explained in one place, the example file
//! `node/leak-node.example.toml` ([`EXAMPLE`]): `leak-node init` writes it
//! with the values it was given, keeping its comments.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format as _, Serialized, Toml},
};
use leak_protocol::federation;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

mod exit;
pub use self::exit::{ExitConfig, Transport};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value is missing, of the wrong type, or makes no sense; the text
    /// names the key and the problem.
    #[error("{0}")]
    Invalid(String),
    /// The configuration cannot be written as commented TOML.
    #[error("cannot write the configuration: {0}")]
    Write(String),
}

/// Returns [`ConfigError::Invalid`] with the message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(ConfigError::Invalid(format!($($fmt)+)));
        }
    };
}

/// The example configuration (`node/leak-node.example.toml`): every
/// setting, commented, at its default, with `node.data_dir` set to
/// [`EXAMPLE_DATA_DIR`]. `leak-node init` writes it with the values it was
/// given ([`Config::to_commented_toml`]); a test checks that it parses to
/// the defaults and names every setting.
pub const EXAMPLE: &str = include_str!("../../leak-node.example.toml");

/// The data directory [`EXAMPLE`] names: a system-wide one, since the
/// defaults have none (`init` and [`Config::load`] choose it).
pub const EXAMPLE_DATA_DIR: &str = "/var/lib/leak";

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
    /// This node's own cover traffic (loops).
    pub cover: CoverConfig,
}

/// `[cover]`: the loops every node sends through two other relays and back
/// to itself (see [`crate::relay::cover`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverConfig {
    /// Mean gap between two loops, in milliseconds (a Poisson process); 0
    /// sends none (not recommended: a quiet relay then mixes nothing, and an
    /// (n-1) attack on it goes unseen).
    pub loop_interval_ms: u64,
    /// Mean per-hop delay of a loop, in milliseconds: the same mean as
    /// senders use, so loops and their packets look alike at every hop.
    pub loop_delay_ms: u32,
    /// How long past the sum of its delays a loop is awaited before it
    /// counts as lost, in milliseconds.
    pub loop_grace_ms: u64,
    /// Most loops awaited at once (the oldest counts as lost beyond).
    pub max_pending_loops: usize,
    /// The window over which the return ratio is checked, in seconds.
    pub ratio_window_secs: u64,
    /// A warning is logged when fewer than this share of the loops settled
    /// in a window came back (0 to 1).
    pub min_return_ratio: f64,
}

impl CoverConfig {
    fn defaults() -> Self {
        Self {
            loop_interval_ms: 5_000,
            loop_delay_ms: 60_000,
            loop_grace_ms: 60_000,
            max_pending_loops: 4_096,
            ratio_window_secs: 600,
            min_return_ratio: 0.8,
        }
    }

    /// The pure loop machine's settings, with `max_hop_delay_ms` the
    /// longest delay relays accept.
    pub fn loops(&self, max_hop_delay_ms: u32) -> crate::relay::LoopConfig {
        crate::relay::LoopConfig {
            interval_ms: self.loop_interval_ms,
            mean_delay_ms: self.loop_delay_ms,
            max_hop_delay_ms,
            grace_ms: self.loop_grace_ms,
            max_pending: self.max_pending_loops,
        }
    }
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
    /// Most simultaneous connections (`leak-node run` raises the open-files
    /// limit to match, up to the hard limit).
    pub max_connections: u32,
    /// Most connections from or to one peer.
    pub max_connections_per_peer: u32,
    /// Most packets waiting for processing from one peer.
    pub peer_queue: usize,
    /// Most packets waiting for processing in all.
    pub global_queue: usize,
    /// Most packets held for their mixing delay, in memory and on disk.
    pub held_packets: usize,
    /// Most held packets kept in memory; the rest wait on disk
    /// (`DATA_DIR/held`, emptied at start and stop).
    pub held_in_memory: usize,
    /// Most packets waiting to be written to one next hop.
    pub link_queue: usize,
    /// Longest mixing delay accepted, in milliseconds; longer ones are dropped.
    pub max_delay_ms: u32,
    /// How long a worker that found the queue empty goes on gathering
    /// packets after the first arrives, in milliseconds (0: none): a quiet
    /// node then opens its packets in batches, each batch's replay tags in
    /// one durable transaction, instead of one disk flush per packet. The
    /// wait adds to the mixing delay (a minute per hop by default); a busy
    /// node never waits.
    pub batch_gather_ms: u64,
    /// Threads of the asynchronous runtime, which carries the network
    /// (Noise, Yamux, TCP), the timers and the requests (0: half the cores,
    /// at least one). The packets' cryptography runs on worker threads of
    /// its own, one per core. On a quiet relay every extra runtime thread
    /// costs wake-ups: each task woken on one thread may rouse another,
    /// idle one to look for work.
    pub io_threads: usize,
    /// Seconds an idle connection stays open.
    pub idle_timeout_secs: u64,
}

impl LimitsConfig {
    /// The runtime's thread count: [`Self::io_threads`], or half of
    /// `cores` (at least one) when that is 0.
    pub fn runtime_threads(&self, cores: usize) -> usize {
        match self.io_threads {
            0 => (cores / 2).max(1),
            n => n,
        }
    }
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
    /// The window of the per-source deposit quotas, in seconds.
    pub deposit_window_secs: u64,
    /// Most replies one previous-hop peer may deposit per window (0: no
    /// limit).
    pub max_deposits_per_source: u32,
    /// Most distinct mailboxes one previous-hop peer may deposit into per
    /// window (0: no limit).
    pub max_mailboxes_per_source: u32,
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
    /// The federation's directory authorities: their Ed25519 public keys
    /// (hex). Only nodes of a roster they signed enter the directory.
    pub authorities: Vec<String>,
    /// How many of them must have signed a roster.
    pub authority_threshold: usize,
    /// A signed roster file to take (the authorities publish one by
    /// writing it here; the node re-reads it when it changes); empty: the
    /// roster comes from the network only.
    pub roster_file: String,
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
                max_connections: 1024,
                max_connections_per_peer: 2,
                peer_queue: 512,
                global_queue: 8192,
                held_packets: 393_216,
                held_in_memory: 16_384,
                link_queue: 1024,
                max_delay_ms: federation::MAX_HOP_DELAY_MS,
                batch_gather_ms: 1000,
                io_threads: 0,
                idle_timeout_secs: 600,
            },
            mailbox: MailboxConfig {
                ttl_secs: federation::MAILBOX_LIFETIME_SECS,
                max_per_mailbox: 64,
                max_total: 100_000,
                deposit_window_secs: 60,
                max_deposits_per_source: 6_000,
                max_mailboxes_per_source: 2_000,
            },
            directory: DirectoryConfig {
                max_age_secs: federation::DESCRIPTOR_MAX_AGE_SECS,
                max_clock_skew_secs: federation::MAX_CLOCK_SKEW_SECS,
                max_nodes: 10_000,
                authorities: Vec::new(),
                authority_threshold: 1,
                roster_file: String::new(),
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
            cover: CoverConfig::defaults(),
        }
    }

    /// Loads `path`, then environment overrides, then `--set` overrides.
    pub fn load(path: &std::path::Path, sets: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
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
            let (key, value) = set.split_once('=').ok_or_else(|| {
                ConfigError::Invalid(format!("--set {set:?}: expected section.key=value"))
            })?;
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
            ConfigError::Invalid(format!(
                "invalid configuration ({} with LEAK_* and --set overrides): {}",
                path.display(),
                problems.join("; ")
            ))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure!(
            (1..=366 * 86_400).contains(&self.epochs.period_secs),
            "epochs.period_secs must be between 1 and 31622400"
        );
        ensure!(
            (1..=6).contains(&self.epochs.keys_ahead),
            "epochs.keys_ahead must be between 1 and 6"
        );
        ensure!(
            self.directory.max_age_secs >= 3 && self.directory.max_nodes >= 1,
            "directory.max_age_secs must be at least 3 and directory.max_nodes at least 1"
        );
        leak_protocol::policy::parse_public_keys(&self.directory.authorities)
            .map_err(|e| ConfigError::Invalid(format!("directory.authorities: {e}")))?;
        ensure!(
            self.directory.authority_threshold >= 1
                && (self.directory.authorities.is_empty()
                    || self.directory.authority_threshold <= self.directory.authorities.len()),
            "directory.authority_threshold must be between 1 and the number of authorities"
        );
        ensure!(
            self.mailbox.ttl_secs <= 366 * 86_400,
            "mailbox.ttl_secs must be at most a year"
        );
        // A relay holds a packet for the delay its header asks, never more
        // than the federation allows any hop to ask.
        ensure!(
            self.limits.max_delay_ms <= federation::MAX_HOP_DELAY_MS,
            "limits.max_delay_ms must be at most 600000 (the federation's cap on one hop's delay)"
        );
        ensure!(
            !self.node.listen.is_empty(),
            "node.listen must name at least one address"
        );
        ensure!(
            !self.node.roles.is_empty(),
            "node.roles must name at least one role"
        );
        ensure!(
            self.limits.peer_queue >= 1 && self.limits.global_queue >= 1,
            "queue limits must be at least 1"
        );
        ensure!(
            self.limits.held_packets >= 1 && self.limits.link_queue >= 1,
            "queue limits must be at least 1"
        );
        ensure!(
            self.limits.max_connections >= 1,
            "limits.max_connections must be at least 1"
        );
        ensure!(
            self.node.family.len() <= 128,
            "node.family is at most 128 bytes"
        );
        ensure!(
            self.cover.loop_delay_ms <= self.limits.max_delay_ms,
            "cover.loop_delay_ms must be at most limits.max_delay_ms"
        );
        ensure!(
            self.cover.max_pending_loops >= 1 && self.cover.ratio_window_secs >= 1,
            "cover.max_pending_loops and cover.ratio_window_secs must be at least 1"
        );
        ensure!(
            (0.0..=1.0).contains(&self.cover.min_return_ratio),
            "cover.min_return_ratio must be between 0 and 1"
        );
        self.metrics_addr()?;
        if self.is_exit() {
            self.validate_exit()?;
        }
        ensure!(
            self.log.level.trim().parse::<tracing::Level>().is_ok(),
            "log.level {:?} must be one of error, warn, info, debug, trace",
            self.log.level
        );
        Ok(())
    }

    /// What running the node needs beyond [`Config::validate`]: the
    /// federation's directory authorities (a node without them could admit
    /// nobody, or, worse, anybody).
    pub fn check_runnable(&self) -> Result<(), ConfigError> {
        ensure!(
            !self.directory.authorities.is_empty(),
            "directory.authorities is empty: name the federation's directory authority keys \
             (`leak-node init --authority KEY`); a node admits only the nodes their roster lists"
        );
        Ok(())
    }

    /// Whether the node has the exit role.
    pub fn is_exit(&self) -> bool {
        self.node.roles.contains(&Role::Exit)
    }

    fn validate_exit(&self) -> Result<(), ConfigError> {
        let e = &self.exit;
        ensure!(
            !e.domain.trim().is_empty(),
            "exit.domain must be set for the exit role (the domain mail is sent from)"
        );
        leak_protocol::Recipient::parse(&self.exit_from()).map_err(|err| {
            ConfigError::Invalid(format!("exit.from {:?}: {err}", self.exit_from()))
        })?;
        leak_protocol::Recipient::parse(&self.exit_abuse_address()).map_err(|err| {
            ConfigError::Invalid(format!(
                "exit.abuse_address {:?}: {err}",
                self.exit_abuse_address()
            ))
        })?;
        self.exit_http_addr()?;
        self.exit_inbound_addr()?;
        if !e.operator_address.trim().is_empty() {
            leak_protocol::Recipient::parse(e.operator_address.trim()).map_err(|err| {
                ConfigError::Invalid(format!(
                    "exit.operator_address {:?}: {err}",
                    e.operator_address
                ))
            })?;
        }
        if e.transport == Transport::Smtp {
            ensure!(
                !e.smtp_url.trim().is_empty(),
                "exit.smtp_url must be set for the smtp transport"
            );
        }
        ensure!(
            e.smtp_connections >= 1,
            "exit.smtp_connections must be at least 1"
        );
        ensure!(
            e.retry_initial_secs >= 1 && e.retry_max_secs >= e.retry_initial_secs,
            "exit.retry_initial_secs must be at least 1 and at most exit.retry_max_secs"
        );
        ensure!(
            e.min_rate > 0.0 && e.max_rate >= e.min_rate && e.max_rate.is_finite(),
            "exit.min_rate must be positive and at most exit.max_rate"
        );
        ensure!(
            e.provider_max_rate >= e.min_rate && e.provider_max_rate.is_finite(),
            "exit.provider_max_rate must be at least exit.min_rate"
        );
        ensure!(
            (1.0..=100.0).contains(&e.warmup_growth),
            "exit.warmup_growth must be between 1 and 100 (the daily cap's factor)"
        );
        ensure!(
            e.complaint_threshold > 0.0 && e.complaint_threshold <= 1.0,
            "exit.complaint_threshold must be a fraction above 0 and at most 1 (0.001 is 0.1 %)"
        );
        ensure!(
            (1..=24 * 30).contains(&e.complaint_window_hours),
            "exit.complaint_window_hours must be between 1 and 720"
        );
        ensure!(
            matches!(e.dkim_algorithm.as_str(), "rsa" | "ed25519"),
            "exit.dkim_algorithm must be \"rsa\" or \"ed25519\""
        );
        if !e.dkim_selector.is_empty() {
            ensure!(
                !e.dkim_key_file.is_empty(),
                "exit.dkim_key_file must be set when exit.dkim_selector is"
            );
        }
        ensure!(
            e.dkim_ed25519_selector.is_empty() == e.dkim_ed25519_key_file.is_empty(),
            "exit.dkim_ed25519_selector and exit.dkim_ed25519_key_file are set together"
        );
        if !e.dkim_ed25519_selector.is_empty() {
            ensure!(
                e.dkim_algorithm == "rsa" && !e.dkim_selector.is_empty(),
                "exit.dkim_ed25519_selector adds an Ed25519 signature beside an RSA one: \
                 set exit.dkim_selector and exit.dkim_key_file to the RSA key"
            );
            ensure!(
                e.dkim_ed25519_selector != e.dkim_selector,
                "exit.dkim_ed25519_selector must differ from exit.dkim_selector"
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
    pub fn exit_http_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.exit.http_listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "exit.http_listen {:?} is not an address:port",
                self.exit.http_listen
            ))
        })
    }

    /// The LMTP address for the exit's inbound mail (smtp transport only),
    /// if any: a loopback address, as LMTP has no authentication.
    pub fn exit_inbound_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let listen = self.exit.inbound_listen.trim();
        if listen.is_empty() || self.exit.transport != Transport::Smtp {
            return Ok(None);
        }
        let addr: SocketAddr = listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "exit.inbound_listen {listen:?} is not an address:port"
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "exit.inbound_listen {listen:?} must be a loopback address (LMTP has no \
                 authentication: the exit's own mail server connects to it)"
            )));
        }
        Ok(Some(addr))
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
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics.listen.trim().is_empty() {
            return Ok(None);
        }
        self.metrics.listen.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "metrics.listen {:?} is not an address:port",
                self.metrics.listen
            ))
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

    /// The held packets past the memory budget (emptied at start and stop).
    pub fn held_path(&self) -> PathBuf {
        self.node.data_dir.join("held")
    }

    /// The identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.node.data_dir.join(crate::identity::IDENTITY_FILE)
    }

    /// The configuration as a commented TOML file: [`EXAMPLE`] with every
    /// value that differs from it replaced, its comments and layout kept.
    /// `leak-node init` writes this.
    pub fn to_commented_toml(&self) -> Result<String, ConfigError> {
        let values = toml::Table::try_from(self).map_err(|e| ConfigError::Write(e.to_string()))?;
        leak_net::config_template::fill(EXAMPLE, &values)
            .map_err(|e| ConfigError::Write(format!("filling in the example configuration: {e}")))
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
mod tests;
