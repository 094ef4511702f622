//! Which provider hosts a recipient's mail: by the domain's name for the
//! providers' own domains (gmail.com, outlook.fr, yahoo.co.uk...), else by
//! its MX hosts, since a company or a university whose mail Google or
//! Microsoft hosts is, for that provider's reputation system, the same
//! destination (`aspmx.l.google.com`, `*.mail.protection.outlook.com`,
//! `*.yahoodns.net`). The lookups use `hickory-resolver`, answers are
//! kept an hour (a failure five minutes), and nothing of them is logged.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Duration};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};

use super::{ExitError, provider::Provider};
use crate::config::{Config, Transport};

/// How long an answer is kept.
const KEEP_MS: u64 = 3_600_000;
/// How long a failed lookup counts as "other".
const KEEP_FAILED_MS: u64 = 300_000;
/// Longest wait for an answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Most domains remembered (the oldest answers go first beyond).
const MAX_DOMAINS: usize = 10_000;

/// The resolver `exit.dns_resolver` names: `""` the system's
/// (`/etc/resolv.conf`), `"off"` none, or `IP:PORT`.
pub(super) fn resolver_config(
    setting: &str,
) -> Result<Option<(ResolverConfig, ResolverOpts)>, ExitError> {
    let setting = setting.trim();
    if setting == "off" {
        return Ok(None);
    }
    if setting.is_empty() {
        return hickory_resolver::system_conf::read_system_conf()
            .map(Some)
            .map_err(|e| ExitError::setting("exit.dns_resolver", e.to_string()));
    }
    let addr: SocketAddr = setting.parse().map_err(|_| {
        ExitError::setting("exit.dns_resolver", format!("{setting:?} is not IP:PORT"))
    })?;
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
    Ok(Some((
        ResolverConfig::from_parts(None, vec![], vec![server]),
        ResolverOpts::default(),
    )))
}

/// Classifies recipient domains, by MX when the name does not tell.
pub struct MxProviders {
    resolver: Option<TokioResolver>,
    /// Domain → (provider, kept until, Unix ms).
    known: Mutex<HashMap<String, (Provider, u64)>>,
}

impl MxProviders {
    /// From `exit.dns_resolver` ([`resolver_config`]; `"off"`: by names
    /// only). The file transport looks nothing up.
    pub fn from_config(config: &Config) -> Result<Self, ExitError> {
        let setting = config.exit.dns_resolver.trim();
        let resolver = if config.exit.transport != Transport::Smtp {
            None
        } else {
            match resolver_config(setting) {
                Ok(Some((conf, options))) => Some(
                    TokioResolver::builder_with_config(conf, TokioRuntimeProvider::default())
                        .with_options(options)
                        .build()
                        .map_err(|e| ExitError::setting("exit.dns_resolver", e.to_string()))?,
                ),
                Ok(None) => None,
                Err(e) if setting.is_empty() => {
                    tracing::warn!(
                        error = %e,
                        "no DNS resolver: recipients' providers are told by domain name only"
                    );
                    None
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            resolver,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// The provider of `domain` (ASCII) at `now_ms`: by name if it is a
    /// provider's own, else by its MX hosts (`Other` when they name no
    /// provider or cannot be had).
    pub async fn provider(&self, domain: &str, now_ms: u64) -> Provider {
        let by_name = Provider::of_domain(domain);
        let Some(resolver) = &self.resolver else {
            return by_name;
        };
        if by_name != Provider::Other {
            return by_name;
        }
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(&(provider, until)) = self.lock().get(&domain)
            && until > now_ms
        {
            return provider;
        }
        let fqdn = format!("{domain}.");
        let answer = tokio::time::timeout(TIMEOUT, resolver.mx_lookup(fqdn.as_str())).await;
        let (provider, keep) = match answer {
            Ok(Ok(lookup)) => {
                let hosts: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some(mx.exchange.to_string()),
                        _ => None,
                    })
                    .collect();
                (
                    Provider::of_mx_hosts(&hosts).unwrap_or(Provider::Other),
                    KEEP_MS,
                )
            }
            _ => (Provider::Other, KEEP_FAILED_MS),
        };
        let mut known = self.lock();
        if known.len() >= MAX_DOMAINS {
            known.retain(|_, (_, until)| *until > now_ms);
            if known.len() >= MAX_DOMAINS {
                known.clear();
            }
        }
        known.insert(domain, (provider, now_ms.saturating_add(keep)));
        provider
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Provider, u64)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}
