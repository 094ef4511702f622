//! The client's configuration file and where its files live.
//!
//! One TOML file (unknown keys are errors, missing keys take their
//! defaults). Every key is explained in the example file
//! `client/leak.example.toml` ([`EXAMPLE`]), which `leak init` writes with
//! the values it was given, keeping its comments. Its place is
//! `$XDG_CONFIG_HOME/leak/config.toml` unless `--config` or `LEAK_CONFIG`
//! names another; the state directory (directory cache, pending and finished
//! leaks) is `$XDG_STATE_HOME/leak` unless `--state-dir` or `LEAK_STATE_DIR`
//! names another.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use leak_net::Peer;
use libp2p::{Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

use crate::path::{MAX_HOP_DELAY_MS, MAX_HOPS, MIN_HOPS};

/// The example configuration (`client/leak.example.toml`): every setting,
/// commented, at its default. `leak init` writes it with the values it was
/// given ([`Config::to_commented_toml`]); a test checks that it parses to
/// the defaults and names every setting.
pub const EXAMPLE: &str = include_str!("../leak.example.toml");

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach the federation.
    pub network: NetworkConfig,
    /// How leaks are sent.
    pub send: SendConfig,
    /// The agent's cover traffic and mailbox polls.
    pub cover: CoverSettings,
    /// The always-on agent (`leak agent`).
    pub agent: AgentConfig,
    /// Which descriptors to trust, and the cache.
    pub directory: DirectoryConfig,
    /// The moderation policy.
    pub policy: PolicyConfig,
    /// The agent's web page (`leak ui`).
    pub ui: UiConfig,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Nodes to fetch the directory from, each with `/p2p/PEERID`.
    pub bootstrap: Vec<Multiaddr>,
    /// How long to wait for one node to answer, in seconds.
    pub connect_timeout_secs: u64,
    /// The local address outgoing connections use (an address of this
    /// machine); `None` (`""` in the file): the one the system chooses.
    #[serde(
        serialize_with = "serialize_bind",
        deserialize_with = "deserialize_bind"
    )]
    pub bind: Option<IpAddr>,
}

/// `network.bind`: the address, or `""` for none (TOML has no null).
fn serialize_bind<S: serde::Serializer>(bind: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
    match bind {
        Some(ip) => s.collect_str(ip),
        None => s.serialize_str(""),
    }
}

/// `network.bind`: an IP address or `""`, with an error that names the key.
fn deserialize_bind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "network.bind must be an IP address of this machine, like \"127.0.0.77\" (not {text:?})"
        ))
    })
}

/// `[send]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendConfig {
    /// Hops of a path, counting the exit (2 to 5).
    pub hops: usize,
    /// Mean of the exponential per-hop mixing delay, in milliseconds.
    pub mixing_delay_ms: u32,
    /// How long to wait for a receipt beyond the delays the path adds, in seconds.
    pub receipt_timeout_secs: u64,
    /// How many times a leak without a receipt is sent again.
    pub retransmissions: u32,
    /// Mean pause before a retransmission, in milliseconds (drawn uniformly
    /// between half and one and a half times this).
    pub retransmit_delay_ms: u64,
}

/// `[cover]`: the agent's Poisson clocks. These defaults, with
/// [`SendConfig::mixing_delay_ms`], are the traffic model's one place
/// (issue 12's measurement sets them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoverSettings {
    /// Mean interval between two packets the agent sends to its guard
    /// (drop, loop or real), in milliseconds.
    pub send_interval_ms: u64,
    /// The share of send slots that are loops (a waiting leak takes a loop
    /// slot), above 0 and at most 1.
    pub loop_share: f64,
    /// Mean interval between two polls of the agent's mailbox, in milliseconds.
    pub poll_interval_ms: u64,
}

/// `[agent]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// How often the agent fetches the directory again, in seconds.
    pub directory_refresh_secs: u64,
    /// The least time a leak's receipt is waited for before the leak is
    /// sent again, in seconds (the agent waits longer when the round trip's
    /// p99.9 is longer).
    pub retransmit_min_wait_secs: u64,
    /// A retransmission leaves at a random time uniform in this many
    /// seconds after the wait.
    pub retransmit_spread_secs: u64,
    /// The anonymity set the agent aims for: when the federation's
    /// published traffic says its leaks would hide among fewer senders, it
    /// lengthens the per-hop delay (up to what relays accept). 0: never.
    pub min_anonymity_set: u32,
    /// How many whole days `leak status` keeps listing a leak that ended
    /// (its outcome, the day, the redacted recipient; never its message
    /// id), then forgets it. 0: at the next `leak status` or agent tick.
    pub forget_ended_after_days: u32,
    /// Whole days a conversation is kept after its last message or answer
    /// (its recipient's address and the answers; see `leak inbox`).
    pub keep_threads_days: u32,
    /// Mean seconds between two fetches of one conversation's answers.
    pub fetch_every_secs: u64,
}

/// `[ui]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Whether the agent serves its web page.
    pub enabled: bool,
    /// The loopback address and port it serves it on (port 0: any free
    /// port; `leak ui` asks the agent which).
    pub listen: String,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_UI_LISTEN.to_owned(),
        }
    }
}

/// Where the agent serves its page unless `ui.listen` says otherwise.
pub const DEFAULT_UI_LISTEN: &str = "127.0.0.1:7390";

impl UiConfig {
    /// The address to listen on: a loopback address (the page must never
    /// be reachable from another machine).
    pub fn address(&self) -> anyhow::Result<std::net::SocketAddr> {
        let address: std::net::SocketAddr = self.listen.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "ui.listen {:?} is not an address and port such as {DEFAULT_UI_LISTEN}",
                self.listen
            )
        })?;
        if !address.ip().is_loopback() {
            anyhow::bail!(
                "ui.listen {address} is not a loopback address: the page must be reachable from this machine only"
            );
        }
        Ok(address)
    }
}

/// `[directory]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// Descriptors published longer ago than this are refused, in seconds.
    pub max_age_secs: u64,
    /// Descriptors published further in the future than this are refused.
    pub max_clock_skew_secs: u64,
    /// When no bootstrap node answers, the cached directory is used if it
    /// was fetched at most this many seconds ago.
    pub cache_max_age_secs: u64,
    /// The federation's directory authorities' Ed25519 public keys (hex):
    /// only the nodes of a roster they signed are used.
    pub authorities: Vec<String>,
    /// How many of them must have signed the roster.
    pub authority_threshold: usize,
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A signed policy file (as exits use); empty means the policy built
    /// into this client.
    pub file: String,
    /// Ed25519 public keys (hex) of the policy maintainers whose signatures
    /// on `file` this client accepts.
    pub trusted_keys: Vec<String>,
    /// How many of those keys must have signed the file.
    pub threshold: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            file: String::new(),
            trusted_keys: Vec::new(),
            threshold: 1,
        }
    }
}

impl PolicyConfig {
    /// The policy to check texts with: the signed file if one is named (it
    /// must verify under the trusted keys and be at least as new as the
    /// built-in policy), else the built-in one. The same rules as an exit's.
    pub fn load(&self) -> anyhow::Result<leak_protocol::policy::Policy> {
        use leak_protocol::policy;
        let path = self.file.trim();
        if path.is_empty() {
            return Ok(policy::Policy::builtin());
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read policy.file {path}"))?;
        let keys = policy::parse_public_keys(&self.trusted_keys).context("policy.trusted_keys")?;
        policy::verify_replacement(&bytes, &keys, self.threshold)
            .with_context(|| format!("policy.file {path}"))
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            connect_timeout_secs: 10,
            bind: None,
        }
    }
}

impl NetworkConfig {
    /// A libp2p peer with a fresh ephemeral identity, whose outgoing
    /// connections leave from [`Self::bind`] when it is set.
    pub fn peer(&self) -> anyhow::Result<Peer> {
        self.check_bind()?;
        Ok(Peer::with_local_address(
            libp2p::identity::Keypair::generate_ed25519(),
            self.bind,
        )?)
    }

    /// Checks that [`Self::bind`], if set, is an address of this machine
    /// (else every connection would fail, with a less clear message).
    pub fn check_bind(&self) -> anyhow::Result<()> {
        if let Some(ip) = self.bind {
            std::net::TcpListener::bind((ip, 0))
                .with_context(|| format!("network.bind {ip} is not usable on this machine"))?;
        }
        Ok(())
    }
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            hops: 4,
            mixing_delay_ms: 60_000,
            receipt_timeout_secs: 60,
            retransmissions: 2,
            retransmit_delay_ms: 2000,
        }
    }
}

impl Default for CoverSettings {
    fn default() -> Self {
        Self {
            send_interval_ms: crate::cover::DEFAULT_SEND_INTERVAL_MS,
            loop_share: crate::cover::DEFAULT_LOOP_SHARE,
            poll_interval_ms: crate::cover::DEFAULT_POLL_INTERVAL_MS,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            directory_refresh_secs: 1800,
            retransmit_min_wait_secs: 3600,
            retransmit_spread_secs: 3 * 3600,
            min_anonymity_set: crate::estimate::DEFAULT_MIN_SET as u32,
            forget_ended_after_days: 7,
            keep_threads_days: 30,
            fetch_every_secs: 1800,
        }
    }
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            max_age_secs: leak_protocol::federation::DESCRIPTOR_MAX_AGE_SECS,
            max_clock_skew_secs: leak_protocol::federation::MAX_CLOCK_SKEW_SECS,
            cache_max_age_secs: 3600,
            authorities: Vec::new(),
            authority_threshold: 1,
        }
    }
}

/// Where the configuration file and the state directory are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The configuration file.
    pub config: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
}

impl Paths {
    /// The given paths, or the XDG defaults for those not given.
    pub fn resolve(config: Option<PathBuf>, state_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dirs = || {
            directories::ProjectDirs::from("", "", "leak").ok_or_else(|| {
                anyhow::anyhow!(
                    "no home directory: give --config and --state-dir (or LEAK_CONFIG and LEAK_STATE_DIR)"
                )
            })
        };
        let config = match config {
            Some(path) => path,
            None => dirs()?.config_dir().join("config.toml"),
        };
        let state_dir = match state_dir {
            Some(path) => path,
            None => {
                let dirs = dirs()?;
                dirs.state_dir()
                    .unwrap_or_else(|| dirs.data_local_dir())
                    .to_path_buf()
            }
        };
        Ok(Self { config, state_dir })
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigMissing(path.to_path_buf()).into());
            }
            Err(e) => {
                return Err(anyhow::anyhow!("cannot read {}: {e}", path.display()));
            }
        };
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks the values' ranges.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(MIN_HOPS..=MAX_HOPS).contains(&self.send.hops) {
            anyhow::bail!("send.hops must be between {MIN_HOPS} and {MAX_HOPS}");
        }
        if self.send.mixing_delay_ms > MAX_HOP_DELAY_MS / 10 {
            anyhow::bail!(
                "send.mixing_delay_ms must be at most {} (a tenth of the longest delay relays accept)",
                MAX_HOP_DELAY_MS / 10
            );
        }
        if self.send.receipt_timeout_secs == 0 {
            anyhow::bail!("send.receipt_timeout_secs must be at least 1");
        }
        if self.send.retransmissions > 10 {
            anyhow::bail!("send.retransmissions must be at most 10");
        }
        if self.cover.send_interval_ms == 0 || self.cover.poll_interval_ms == 0 {
            anyhow::bail!("cover.send_interval_ms and cover.poll_interval_ms must be at least 1");
        }
        if !(self.cover.loop_share > 0.0 && self.cover.loop_share <= 1.0) {
            anyhow::bail!(
                "cover.loop_share must be above 0 (leaks leave in loop slots) and at most 1"
            );
        }
        if self.agent.directory_refresh_secs == 0 {
            anyhow::bail!("agent.directory_refresh_secs must be at least 1");
        }
        if self.network.connect_timeout_secs == 0 {
            anyhow::bail!("network.connect_timeout_secs must be at least 1");
        }
        for address in &self.network.bootstrap {
            check_bootstrap(address).map_err(|e| anyhow::anyhow!("network.bootstrap: {e}"))?;
        }
        self.ui.address()?;
        leak_protocol::policy::parse_public_keys(&self.directory.authorities)
            .map_err(|e| anyhow::anyhow!("directory.authorities: {e}"))?;
        if self.directory.authority_threshold == 0
            || (!self.directory.authorities.is_empty()
                && self.directory.authority_threshold > self.directory.authorities.len())
        {
            anyhow::bail!(
                "directory.authority_threshold must be between 1 and the number of authorities"
            );
        }
        if self.policy.threshold == 0 {
            anyhow::bail!("policy.threshold must be at least 1");
        }
        for key in &self.policy.trusted_keys {
            if hex::decode(key).map(|k| k.len()) != Ok(32) {
                anyhow::bail!("policy.trusted_keys: {key:?} is not 64 hex digits");
            }
        }
        Ok(())
    }

    /// The configuration as a commented TOML file: [`EXAMPLE`] with every
    /// value that differs from it replaced, its comments and layout kept.
    /// `leak init` writes this.
    pub fn to_commented_toml(&self) -> anyhow::Result<String> {
        let values = toml::Table::try_from(self).context("encoding the configuration")?;
        leak_net::config_template::fill(EXAMPLE, &values)
            .map_err(|e| anyhow::anyhow!("filling in the example configuration: {e}"))
    }
}

/// The configuration file does not exist.
#[derive(Debug, thiserror::Error)]
#[error("no configuration at {}: run `leak init --bootstrap ADDRESS` first", .0.display())]
pub struct ConfigMissing(pub PathBuf);

/// Checks that a bootstrap address ends with `/p2p/PEERID`.
pub fn check_bootstrap(address: &Multiaddr) -> anyhow::Result<()> {
    match address.iter().last() {
        Some(Protocol::P2p(_)) if address.iter().count() > 1 => Ok(()),
        _ => anyhow::bail!("{address} must end with /p2p/PEERID after the node's address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commented_file_parses_to_what_was_written() {
        let mut config = Config::default();
        config.network.bootstrap = vec![
            "/ip4/127.0.0.1/tcp/4700/p2p/12D3KooWGzHqThQN7U5zHQkdprBgB1XQhKexGEkCPAKRM3HqpwZC"
                .parse()
                .unwrap(),
        ];
        config.send.mixing_delay_ms = 0;
        config.policy.trusted_keys = vec!["ab".repeat(32)];
        config.policy.file = "/etc/leak/policy \"signed\"".into();
        config.policy.threshold = 2;
        config.network.bind = Some("127.0.0.77".parse().unwrap());
        let text = config.to_commented_toml().unwrap();
        assert_eq!(Config::parse(&text).unwrap(), config);
        assert_eq!(
            Config::parse(&Config::default().to_commented_toml().unwrap()).unwrap(),
            Config::default()
        );
    }

    /// The example file parses to the defaults, and what `init` writes
    /// without options is the example itself.
    #[test]
    fn example_is_the_defaults() {
        assert_eq!(Config::parse(EXAMPLE).unwrap(), Config::default());
        assert_eq!(Config::default().to_commented_toml().unwrap(), EXAMPLE);
    }

    /// Every setting is in the example (so a new one cannot be left out of
    /// it), and nothing else is.
    #[test]
    fn example_names_every_setting() {
        fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (key, value) in table {
                let path = format!("{prefix}{key}");
                match value {
                    toml::Value::Table(table) => keys(&format!("{path}."), table, out),
                    _ => out.push(path),
                }
            }
        }
        let mut settings = Vec::new();
        keys(
            "",
            &toml::Table::try_from(Config::default()).unwrap(),
            &mut settings,
        );
        let mut in_example = Vec::new();
        keys("", &toml::from_str(EXAMPLE).unwrap(), &mut in_example);
        settings.sort();
        in_example.sort();
        assert_eq!(in_example, settings);
    }

    /// What `init` writes is the example with the changed values only: every
    /// comment and every unchanged line stays.
    #[test]
    fn commented_file_is_the_example_with_values_set() {
        let mut config = Config::default();
        config.network.bootstrap = vec![
            "/ip4/127.0.0.1/tcp/4700/p2p/12D3KooWGzHqThQN7U5zHQkdprBgB1XQhKexGEkCPAKRM3HqpwZC"
                .parse()
                .unwrap(),
        ];
        config.network.bind = Some("127.0.0.77".parse().unwrap());
        config.send.hops = 5;
        let text = config.to_commented_toml().unwrap();
        let changed = [
            "bootstrap = [\"/ip4/127.0.0.1/tcp/4700/p2p/12D3KooWGzHqThQN7U5zHQkdprBgB1XQhKexGEkCPAKRM3HqpwZC\"]",
            "bind = \"127.0.0.77\"",
            "hops = 5",
        ];
        let written: Vec<&str> = text.lines().collect();
        let example: Vec<&str> = EXAMPLE.lines().collect();
        assert_eq!(written.len(), example.len());
        for (written, example) in written.iter().zip(&example) {
            if written != example {
                assert!(changed.contains(written), "{example:?} became {written:?}");
            }
        }
        for line in changed {
            assert!(written.contains(&line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn missing_keys_take_defaults_and_unknown_keys_are_errors() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let partial = Config::parse("[send]\nhops = 4\n").unwrap();
        assert_eq!(partial.send.hops, 4);
        assert_eq!(partial.send.mixing_delay_ms, 60_000);
        let err = Config::parse("[send]\nhopz = 4\n").unwrap_err().to_string();
        assert!(err.contains("hopz"), "{err}");
        let err = Config::parse("colour = 1\n").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for (text, key) in [
            ("[send]\nhops = 6\n", "send.hops"),
            ("[send]\nhops = 1\n", "send.hops"),
            ("[send]\nreceipt_timeout_secs = 0\n", "receipt_timeout_secs"),
            ("[send]\nmixing_delay_ms = 3600000\n", "mixing_delay_ms"),
            ("[policy]\ntrusted_keys = [\"zz\"]\n", "trusted_keys"),
            (
                "[network]\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n",
                "network.bootstrap",
            ),
            ("[network]\nbind = \"localhost\"\n", "bind"),
            ("[cover]\nloop_share = 1.5\n", "cover.loop_share"),
            ("[cover]\nloop_share = 0.0\n", "cover.loop_share"),
            ("[cover]\nsend_interval_ms = 0\n", "cover.send_interval_ms"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn explicit_paths_win() {
        let paths = Paths::resolve(Some("/a/c.toml".into()), Some("/b".into())).unwrap();
        assert_eq!(paths.config, PathBuf::from("/a/c.toml"));
        assert_eq!(paths.state_dir, PathBuf::from("/b"));
    }
}
