//! Handing email on: the transports, how a failure is classified, the
//! retry schedule, and the sending pace that backs off when a mail system
//! defers.

use std::time::Duration;

use anyhow::Context as _;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    transport::smtp::{
        PoolConfig,
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};

use crate::config::{Config, Transport};

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The mail system took it (SMTP 250, or the file is written).
    Delivered,
    /// Try again later. `deferral` marks a 421 or a 4.7.x answer: the
    /// receiving system asks us to slow down.
    Temporary {
        /// `451 4.3.0`, `network`, `tls`, `timeout`, `io`: never the server's
        /// text, which can name the recipient.
        code: String,
        /// A rate-limiting deferral.
        deferral: bool,
    },
    /// Refused for good (5xx).
    Permanent {
        /// The SMTP code.
        code: String,
    },
}

/// Where email goes.
pub enum Mailer {
    /// `.eml` files in a directory.
    File(AsyncFileTransport<Tokio1Executor>),
    /// The smarthost over implicit TLS (`smtps://`), with lettre's pool.
    Smtps(AsyncSmtpTransport<Tokio1Executor>),
    /// The smarthost over `smtp://` (plain or STARTTLS), with our pool.
    Smtp(SmtpPool),
}

/// When to upgrade an `smtp://` connection with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// Never (loopback only).
    Never,
    /// When the server offers it.
    Opportunistic,
    /// Always; fail if the server does not offer it.
    Required,
}

/// Pooled SMTP connections to the smarthost for `smtp://` URLs.
///
/// lettre's own transport writes the end-of-data marker in a write of its
/// own on a socket without `TCP_NODELAY`, so Nagle's algorithm holds it
/// until the server's delayed ACK (about 40 ms per email on Linux). These
/// connections are opened here with `TCP_NODELAY` and handed to lettre's
/// SMTP client.
pub struct SmtpPool {
    host: String,
    port: u16,
    starttls: StartTls,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
    idle: std::sync::Mutex<Vec<AsyncSmtpConnection>>,
    max_idle: usize,
}

impl SmtpPool {
    /// A pool for `url` (`smtp://[user@]host[:port][?tls=required|opportunistic]`).
    pub fn new(
        url: &str,
        hello: ClientId,
        credentials: Option<Credentials>,
        timeout: Duration,
        max_idle: usize,
    ) -> anyhow::Result<Self> {
        let parsed =
            url::Url::parse(url).map_err(|e| anyhow::anyhow!("exit.smtp_url {url:?}: {e}"))?;
        anyhow::ensure!(
            parsed.scheme() == "smtp",
            "exit.smtp_url {url:?}: expected smtp://"
        );
        let host = parsed
            .host_str()
            .with_context(|| format!("exit.smtp_url {url:?} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let starttls = match parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned())
            .as_deref()
        {
            None | Some("none") => StartTls::Never,
            Some("opportunistic") => StartTls::Opportunistic,
            Some("required") => StartTls::Required,
            Some(other) => anyhow::bail!(
                "exit.smtp_url {url:?}: tls={other} (expected required, opportunistic or none)"
            ),
        };
        Ok(Self {
            port: parsed.port().unwrap_or(25),
            host,
            starttls,
            hello,
            credentials,
            timeout,
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle,
        })
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, Attempt> {
        let temporary = |code: &str| Attempt::Temporary {
            code: code.into(),
            deferral: false,
        };
        let tcp = match tokio::time::timeout(
            self.timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(_)) => return Err(temporary("network")),
            Err(_) => return Err(temporary("timeout")),
        };
        tcp.set_nodelay(true).map_err(|_| temporary("network"))?;
        let mut conn = tokio::time::timeout(
            self.timeout,
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello),
        )
        .await
        .map_err(|_| temporary("timeout"))?
        .map_err(|e| classify(&e))?;
        let upgrade = match self.starttls {
            StartTls::Never => false,
            StartTls::Opportunistic => conn.can_starttls(),
            StartTls::Required => true,
        };
        if upgrade {
            let params = TlsParameters::new(self.host.clone()).map_err(|_| temporary("tls"))?;
            conn.starttls(params, &self.hello)
                .await
                .map_err(|e| match classify(&e) {
                    Attempt::Temporary { code, .. } if code == "network" => temporary("tls"),
                    other => other,
                })?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(conn)
    }

    /// Sends one email, on an idle connection if there is one (once more on
    /// a fresh one if that idle connection turns out to be dead).
    pub async fn send(&self, message: &Message) -> Attempt {
        let envelope = message.envelope().clone();
        let bytes = message.formatted();
        for reused in [true, false] {
            let idle = if reused {
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
            } else {
                None
            };
            let was_idle = idle.is_some();
            if reused && !was_idle {
                continue;
            }
            let mut conn = match idle {
                Some(conn) => conn,
                None => match self.connect().await {
                    Ok(conn) => conn,
                    Err(attempt) => return attempt,
                },
            };
            let result = tokio::time::timeout(self.timeout, conn.send(&envelope, &bytes)).await;
            match result {
                Ok(Ok(_)) => {
                    if !conn.has_broken() {
                        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                        if idle.len() < self.max_idle {
                            idle.push(conn);
                        }
                    }
                    return Attempt::Delivered;
                }
                Ok(Err(e)) => {
                    let attempt = classify(&e);
                    conn.abort().await;
                    // A pooled connection the server closed meanwhile.
                    if was_idle && e.status().is_none() {
                        continue;
                    }
                    return attempt;
                }
                Err(_) => {
                    conn.abort().await;
                    return Attempt::Temporary {
                        code: "timeout".into(),
                        deferral: false,
                    };
                }
            }
        }
        Attempt::Temporary {
            code: "network".into(),
            deferral: false,
        }
    }
}

impl Mailer {
    /// The transport the configuration names.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let exit = &config.exit;
        match exit.transport {
            Transport::File => {
                let dir = config.exit_file_dir();
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Ok(Self::File(AsyncFileTransport::new(dir)))
            }
            Transport::Smtp if !exit.smtp_url.trim_start().starts_with("smtps:") => {
                let credentials = match exit.smtp_password_file.as_str() {
                    "" => None,
                    file => {
                        let password = std::fs::read_to_string(file).with_context(|| {
                            format!("cannot read exit.smtp_password_file {file}")
                        })?;
                        let user = url_user(&exit.smtp_url).context(
                            "exit.smtp_password_file is set but exit.smtp_url names no user (smtp://user@host)",
                        )?;
                        Some(Credentials::new(user, password.trim().to_owned()))
                    }
                };
                Ok(Self::Smtp(SmtpPool::new(
                    exit.smtp_url.trim(),
                    ClientId::Domain(exit.domain.trim().to_owned()),
                    credentials,
                    Duration::from_secs(exit.smtp_timeout_secs),
                    exit.smtp_connections as usize,
                )?))
            }
            Transport::Smtp => {
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&exit.smtp_url)
                    .map_err(|e| anyhow::anyhow!("exit.smtp_url {:?}: {e}", exit.smtp_url))?
                    .hello_name(ClientId::Domain(exit.domain.trim().to_owned()))
                    .timeout(Some(Duration::from_secs(exit.smtp_timeout_secs)))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(exit.smtp_connections)
                            .idle_timeout(Duration::from_secs(60)),
                    );
                if !exit.smtp_password_file.is_empty() {
                    let password =
                        std::fs::read_to_string(&exit.smtp_password_file).with_context(|| {
                            format!(
                                "cannot read exit.smtp_password_file {}",
                                exit.smtp_password_file
                            )
                        })?;
                    let user = url_user(&exit.smtp_url).context(
                        "exit.smtp_password_file is set but exit.smtp_url names no user (smtp://user@host)",
                    )?;
                    builder =
                        builder.credentials(Credentials::new(user, password.trim().to_owned()));
                }
                Ok(Self::Smtps(builder.build()))
            }
        }
    }

    /// Sends one email.
    pub async fn send(&self, message: Message) -> Attempt {
        match self {
            Self::File(t) => match t.send(message).await {
                Ok(_) => Attempt::Delivered,
                Err(_) => Attempt::Temporary {
                    code: "io".into(),
                    deferral: false,
                },
            },
            Self::Smtps(t) => match t.send(message).await {
                Ok(_) => Attempt::Delivered,
                Err(e) => classify(&e),
            },
            Self::Smtp(pool) => pool.send(&message).await,
        }
    }
}

/// The user name in an SMTP URL, if any.
fn url_user(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let user = userinfo.split(':').next()?;
    (!user.is_empty()).then(|| user.to_owned())
}

/// The enhanced status code (RFC 3463) at the start of an SMTP error's
/// text, e.g. `4.7.1`.
fn enhanced_code(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == ':' || c == '(' || c == ')')
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "2" | "4" | "5")
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// What an SMTP error means for the leak.
pub fn classify(error: &lettre::transport::smtp::Error) -> Attempt {
    let text = error.to_string();
    let enhanced = enhanced_code(&text);
    if let Some(status) = error.status() {
        let code = match &enhanced {
            Some(e) => format!("{status} {e}"),
            None => status.to_string(),
        };
        if error.is_permanent() {
            return Attempt::Permanent { code };
        }
        let deferral = status.to_string() == "421"
            || enhanced.as_deref().is_some_and(|e| e.starts_with("4.7."));
        return Attempt::Temporary { code, deferral };
    }
    let code = if error.is_timeout() {
        "timeout"
    } else if error.is_tls() {
        "tls"
    } else {
        "network"
    };
    Attempt::Temporary {
        code: code.into(),
        deferral: false,
    }
}

/// The wait before attempt `attempts + 1`: `initial` doubling per attempt,
/// at most `max`, then drawn uniformly from its upper half (jitter, so
/// leaks deferred together do not come back together).
pub fn backoff(attempts: u32, initial: Duration, max: Duration, unit_random: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << doublings).min(max);
    base.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
}

/// The sending pace: a token bucket whose rate halves on a deferral (down
/// to `min`) and climbs back by a fiftieth of `max` per success.
#[derive(Debug, Clone)]
pub struct Pace {
    rate: f64,
    min: f64,
    max: f64,
    tokens: f64,
    last: Duration,
}

impl Pace {
    /// A full bucket at the highest rate. `now` is any monotonic clock.
    pub fn new(min: f64, max: f64, now: Duration) -> Self {
        Self {
            rate: max,
            min,
            max,
            tokens: max.max(1.0),
            last: now,
        }
    }

    /// The current rate (emails per second).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// A deferral: halve the rate, and empty the bucket.
    pub fn deferred(&mut self, now: Duration) {
        self.refill(now);
        self.rate = (self.rate / 2.0).max(self.min);
        self.tokens = self.tokens.min(0.0);
    }

    /// A success: recover slowly.
    pub fn succeeded(&mut self) {
        self.rate = (self.rate + self.max / 50.0).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(
            enhanced_code("transient error (421): 4.7.0 Try later").as_deref(),
            Some("4.7.0")
        );
        assert_eq!(
            enhanced_code("permanent error (550): 5.1.1 <a@b.c>: unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(enhanced_code("permanent error (550): no such user"), None);
        assert_eq!(enhanced_code("version 1.2.3"), None);
    }

    #[test]
    fn url_users() {
        assert_eq!(
            url_user("smtp://alice@host:587?tls=required").as_deref(),
            Some("alice")
        );
        assert_eq!(url_user("smtps://bob:pw@host").as_deref(), Some("bob"));
        assert_eq!(url_user("smtp://host:25"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(60), s(3600), 1.0), s(60));
        assert_eq!(backoff(1, s(60), s(3600), 0.0), s(30));
        assert_eq!(backoff(3, s(60), s(3600), 1.0), s(240));
        assert_eq!(backoff(30, s(60), s(3600), 1.0), s(3600));
        assert_eq!(backoff(u32::MAX, s(60), s(3600), 0.5), s(2700));
    }

    #[test]
    fn pace_halves_on_deferral_and_recovers_slowly() {
        let s = Duration::from_secs_f64;
        let mut pace = Pace::new(0.5, 10.0, s(0.0));
        for _ in 0..10 {
            pace.take(s(0.0)).unwrap();
        }
        let wait = pace.take(s(0.0)).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9);
        pace.take(s(0.1)).unwrap();
        pace.deferred(s(0.1));
        assert_eq!(pace.rate(), 5.0);
        for _ in 0..10 {
            pace.deferred(s(0.1));
        }
        assert_eq!(pace.rate(), 0.5);
        let wait = pace.take(s(0.1)).unwrap_err();
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-9);
        pace.succeeded();
        assert!((pace.rate() - 0.7).abs() < 1e-9);
        for _ in 0..100 {
            pace.succeeded();
        }
        assert_eq!(pace.rate(), 10.0);
    }
}
