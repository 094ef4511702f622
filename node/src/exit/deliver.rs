//! Handing email on: the transports, how a failure is classified, the
//! retry schedule, and the sending pace that backs off when a mail system
//! defers.

use std::time::Duration;

use anyhow::Context as _;
use lettre::{
    AsyncFileTransport, AsyncTransport as _, Message, Tokio1Executor,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters},
        extension::ClientId,
    },
};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};

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

/// Where email goes, and the operator's problem with it, if any.
pub struct Mailer {
    transport: MailTransport,
    /// The last [`Problem`] logged: a problem is logged when it appears or
    /// changes, and its end when an email goes through again.
    problem: std::sync::Mutex<Option<Problem>>,
}

/// The transport of a [`Mailer`].
enum MailTransport {
    /// `.eml` files in a directory.
    File(AsyncFileTransport<Tokio1Executor>),
    /// The smarthost over `smtp://` (plain or STARTTLS) or `smtps://`
    /// (implicit TLS), with our pool.
    Smtp(Box<SmtpPool>),
}

/// Something the exit's operator must fix (or the smarthost's): the
/// configured smarthost cannot take any email, whatever its recipient.
/// Leaks stay queued and are retried (`Attempt::Temporary` with code
/// `auth` or `tls`), never bounced for it; the log says what is wrong in
/// words of our own, never with the server's text (which can name a
/// recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// AUTH was refused (535 and the like): the user name in
    /// `exit.smtp_url` or the password in `exit.smtp_password_file`.
    AuthRejected,
    /// AUTH is configured but the server offers neither PLAIN nor LOGIN
    /// (many servers offer AUTH only after STARTTLS).
    AuthUnavailable,
    /// The server wants AUTH (or STARTTLS) before it takes mail: a 530,
    /// or a 5.7.x refusal of a client that did not authenticate although
    /// the server offers AUTH.
    AuthRequired,
    /// STARTTLS is required but the server does not offer it, or refused it.
    StartTlsUnavailable,
    /// The server's certificate is not signed by a CA the exit trusts.
    TlsUntrusted,
    /// The server's certificate does not name the host of `exit.smtp_url`.
    TlsWrongName,
    /// The server's certificate has expired or is not valid yet.
    TlsExpired,
    /// The server's certificate is unusable for another reason.
    TlsCertificate,
    /// The TLS handshake failed (no TLS on that port, no common version or
    /// cipher, ...).
    TlsHandshake,
    /// The server refused the session before any email was sent (a 5xx
    /// greeting or EHLO answer).
    SessionRefused,
}

impl Problem {
    /// The code recorded for the attempt (`leak-node queue` shows it).
    pub fn code(self) -> &'static str {
        match self {
            Self::AuthRejected | Self::AuthUnavailable | Self::AuthRequired => "auth",
            Self::SessionRefused => "session",
            _ => "tls",
        }
    }

    /// What the log says.
    pub fn explain(self) -> &'static str {
        match self {
            Self::AuthRejected => {
                "the smarthost refused AUTH: check the user in exit.smtp_url \
                 (smtp://USER@host) and the password in exit.smtp_password_file"
            }
            Self::AuthUnavailable => {
                "AUTH is configured but the smarthost offers neither PLAIN nor LOGIN \
                 (most servers offer AUTH only over TLS: use smtps:// or ?tls=required)"
            }
            Self::AuthRequired => {
                "the smarthost requires AUTH or STARTTLS before it takes mail: set a user \
                 in exit.smtp_url and exit.smtp_password_file, or ?tls=required"
            }
            Self::StartTlsUnavailable => {
                "exit.smtp_url requires STARTTLS but the smarthost does not offer it \
                 (or refused it); nothing was sent in plaintext"
            }
            Self::TlsUntrusted => {
                "the smarthost's TLS certificate is not signed by a trusted CA \
                 (for a private CA, name its certificate in exit.smtp_ca_file)"
            }
            Self::TlsWrongName => {
                "the smarthost's TLS certificate does not name the host in exit.smtp_url"
            }
            Self::TlsExpired => "the smarthost's TLS certificate has expired or is not valid yet",
            Self::TlsCertificate => "the smarthost's TLS certificate is invalid",
            Self::TlsHandshake => {
                "the TLS handshake with the smarthost failed (does that port speak TLS? \
                 smtps:// is implicit TLS, smtp://...?tls=required is STARTTLS)"
            }
            Self::SessionRefused => {
                "the smarthost refused the session before any email was sent: check that \
                 it accepts this exit's address and its EHLO name (exit.domain)"
            }
        }
    }

    fn attempt(self) -> Attempt {
        Attempt::Temporary {
            code: self.code().into(),
            deferral: false,
        }
    }
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

/// Pooled SMTP connections to the smarthost for `smtp://` and `smtps://`
/// URLs.
///
/// lettre's own transport writes the end-of-data marker in a write of its
/// own on a socket without `TCP_NODELAY`, so Nagle's algorithm holds it
/// until the server's delayed ACK (about 40 ms per email on Linux). These
/// connections are opened here with `TCP_NODELAY` (and for `smtps://` the
/// TLS session is set up here, with rustls) and handed to lettre's SMTP
/// client.
pub struct SmtpPool {
    host: String,
    port: u16,
    starttls: StartTls,
    /// For `smtps://`: TLS from the first byte (the default roots and
    /// `exit.smtp_ca_file`'s).
    implicit: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// For STARTTLS (the default roots and `exit.smtp_ca_file`'s).
    tls: Option<TlsParameters>,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
    idle: std::sync::Mutex<Vec<AsyncSmtpConnection>>,
    max_idle: usize,
}

/// A failed attempt and, when the smarthost cannot take any email, why.
type Failure = (Attempt, Option<Problem>);

impl SmtpPool {
    /// A pool for `url` (`smtp://[user@]host[:port][?tls=required|opportunistic]`
    /// or `smtps://[user@]host[:port]`); TLS trusts the default roots and
    /// `ca` (the PEM of `exit.smtp_ca_file`).
    pub fn new(
        url: &str,
        hello: ClientId,
        credentials: Option<Credentials>,
        ca: Option<&[u8]>,
        timeout: Duration,
        max_idle: usize,
    ) -> anyhow::Result<Self> {
        let parsed =
            url::Url::parse(url).map_err(|e| anyhow::anyhow!("exit.smtp_url {url:?}: {e}"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "smtp" | "smtps"),
            "exit.smtp_url {url:?}: expected smtp:// or smtps://"
        );
        let implicit_tls = parsed.scheme() == "smtps";
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
            Some(_) if implicit_tls => anyhow::bail!(
                "exit.smtp_url {url:?}: smtps:// is TLS from the start; tls= is for smtp://"
            ),
            Some("opportunistic") => StartTls::Opportunistic,
            Some("required") => StartTls::Required,
            Some(other) => anyhow::bail!(
                "exit.smtp_url {url:?}: tls={other} (expected required, opportunistic or none)"
            ),
        };
        let ca = ca.map(parse_ca).transpose()?;
        let implicit = if implicit_tls {
            let server_name = ServerName::try_from(host.clone())
                .map_err(|e| anyhow::anyhow!("exit.smtp_url {url:?}: {e}"))?;
            Some((implicit_tls_connector(ca.as_ref())?, server_name))
        } else {
            None
        };
        let tls = match starttls {
            StartTls::Never if implicit_tls => None,
            StartTls::Never => {
                anyhow::ensure!(
                    ca.is_none(),
                    "exit.smtp_ca_file is set but exit.smtp_url {url:?} uses no TLS \
                     (add ?tls=required, or use smtps://)"
                );
                None
            }
            StartTls::Opportunistic | StartTls::Required => {
                Some(tls_parameters(&host, ca.map(|ca| ca.lettre))?)
            }
        };
        Ok(Self {
            port: parsed.port().unwrap_or(if implicit_tls { 465 } else { 25 }),
            host,
            starttls,
            implicit,
            tls,
            hello,
            credentials,
            timeout,
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle,
        })
    }

    /// A new connection: greeting, EHLO, STARTTLS and AUTH as configured.
    /// Nothing about a leak has been said yet, so no failure here is the
    /// leak's: none is permanent.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Failure> {
        let temporary = |code: &str| {
            (
                Attempt::Temporary {
                    code: code.into(),
                    deferral: false,
                },
                None,
            )
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
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit {
            None => Box::new(tcp),
            Some((connector, server_name)) => {
                match tokio::time::timeout(
                    self.timeout,
                    connector.connect(server_name.clone(), tcp),
                )
                .await
                {
                    Ok(Ok(tls)) => Box::new(ImplicitTls(tls)),
                    Ok(Err(_)) => {
                        return Err((Problem::TlsHandshake.attempt(), Some(Problem::TlsHandshake)));
                    }
                    Err(_) => return Err(temporary("timeout")),
                }
            }
        };
        let mut conn = tokio::time::timeout(
            self.timeout,
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello),
        )
        .await
        .map_err(|_| temporary("timeout"))?
        .map_err(|e| session_failure(&e))?;
        let upgrade = match self.starttls {
            StartTls::Never => false,
            StartTls::Opportunistic => conn.can_starttls(),
            StartTls::Required => true,
        };
        if upgrade && let Some(params) = &self.tls {
            let result =
                tokio::time::timeout(self.timeout, conn.starttls(params.clone(), &self.hello))
                    .await;
            // On failure the connection is dropped, not aborted: after a
            // failed handshake lettre's stream is gone, and `abort` (which
            // writes QUIT) would panic.
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(starttls_failure(&e)),
                Err(_) => return Err(temporary("timeout")),
            }
        }
        if let Some(credentials) = &self.credentials {
            let result = tokio::time::timeout(
                self.timeout,
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials),
            )
            .await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    conn.abort().await;
                    return Err(auth_failure(&e));
                }
                Err(_) => {
                    conn.abort().await;
                    return Err(temporary("timeout"));
                }
            }
        }
        Ok(conn)
    }

    /// Sends one email, on an idle connection if there is one (once more on
    /// a fresh one if that idle connection turns out to be dead).
    pub async fn send(&self, message: &Message) -> (Attempt, Option<Problem>) {
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
                    Err(failure) => return failure,
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
                    return (Attempt::Delivered, None);
                }
                Ok(Err(e)) => {
                    let failure = if self.credentials.is_none()
                        && refused_for_want_of_auth(&e, conn.server_info())
                    {
                        (Problem::AuthRequired.attempt(), Some(Problem::AuthRequired))
                    } else {
                        failure(&e)
                    };
                    conn.abort().await;
                    // A pooled connection the server closed meanwhile.
                    if was_idle && e.status().is_none() {
                        continue;
                    }
                    return failure;
                }
                Err(_) => {
                    conn.abort().await;
                    return (
                        Attempt::Temporary {
                            code: "timeout".into(),
                            deferral: false,
                        },
                        None,
                    );
                }
            }
        }
        (
            Attempt::Temporary {
                code: "network".into(),
                deferral: false,
            },
            None,
        )
    }
}

impl Mailer {
    /// The transport the configuration names. Reads the password and CA
    /// files, so that a bad one stops the exit at start with a clear error.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let exit = &config.exit;
        let transport = match exit.transport {
            Transport::File => {
                let dir = config.exit_file_dir();
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                MailTransport::File(AsyncFileTransport::new(dir))
            }
            Transport::Smtp => MailTransport::Smtp(Box::new(SmtpPool::new(
                exit.smtp_url.trim(),
                ClientId::Domain(exit.domain.trim().to_owned()),
                credentials(config)?,
                ca_file(config)?.as_deref(),
                Duration::from_secs(exit.smtp_timeout_secs),
                exit.smtp_connections as usize,
            )?)),
        };
        Ok(Self {
            transport,
            problem: std::sync::Mutex::new(None),
        })
    }

    /// Sends one email.
    pub async fn send(&self, message: Message) -> Attempt {
        let (attempt, problem) = match &self.transport {
            MailTransport::File(t) => match t.send(message).await {
                Ok(_) => (Attempt::Delivered, None),
                Err(_) => (
                    Attempt::Temporary {
                        code: "io".into(),
                        deferral: false,
                    },
                    None,
                ),
            },
            MailTransport::Smtp(pool) => pool.send(&message).await,
        };
        self.report(&attempt, problem);
        attempt
    }

    /// Logs a problem when it appears or changes, and its end.
    fn report(&self, attempt: &Attempt, problem: Option<Problem>) {
        let mut last = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(problem) if *last != Some(problem) => {
                tracing::warn!(
                    code = problem.code(),
                    "the smarthost takes no email; leaks stay queued and are retried: {}",
                    problem.explain()
                );
                *last = Some(problem);
            }
            None if *attempt == Attempt::Delivered && last.is_some() => {
                tracing::info!("the smarthost takes email again");
                *last = None;
            }
            _ => {}
        }
    }
}

/// The AUTH credentials: the user in `exit.smtp_url`, the password in
/// `exit.smtp_password_file`.
fn credentials(config: &Config) -> anyhow::Result<Option<Credentials>> {
    let exit = &config.exit;
    let file = exit.smtp_password_file.trim();
    if file.is_empty() {
        return Ok(None);
    }
    let password = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read exit.smtp_password_file {file}"))?;
    let user = url_user(&exit.smtp_url).context(
        "exit.smtp_password_file is set but exit.smtp_url names no user (smtp://user@host)",
    )?;
    Ok(Some(Credentials::new(user, password.trim().to_owned())))
}

/// The CA certificates of `exit.smtp_ca_file`, checked: the file must hold
/// at least one PEM certificate, and every one must parse.
fn ca_file(config: &Config) -> anyhow::Result<Option<Vec<u8>>> {
    let file = config.exit.smtp_ca_file.trim();
    if file.is_empty() {
        return Ok(None);
    }
    let pem =
        std::fs::read(file).with_context(|| format!("cannot read exit.smtp_ca_file {file}"))?;
    parse_ca(&pem).with_context(|| format!("exit.smtp_ca_file {file}"))?;
    Ok(Some(pem))
}

/// The certificates of a CA file, for lettre (STARTTLS) and for rustls
/// (`smtps://`).
#[derive(Debug)]
struct CaCertificates {
    lettre: Certificate,
    der: Vec<CertificateDer<'static>>,
}

/// PEM CA certificates, checked as [`ca_file`] says.
fn parse_ca(pem: &[u8]) -> anyhow::Result<CaCertificates> {
    // lettre (with rustls) takes a file without any certificate as an
    // empty list: say so instead.
    anyhow::ensure!(
        pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
        "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    );
    let certificate =
        Certificate::from_pem(pem).map_err(|e| anyhow::anyhow!("is not valid PEM: {e}"))?;
    // Adding them to a root store parses them.
    TlsParameters::builder("localhost".into())
        .add_root_certificate(certificate.clone())
        .build()
        .map_err(|e| anyhow::anyhow!("holds a certificate that does not parse: {e}"))?;
    let der = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("is not valid PEM: {e}"))?;
    Ok(CaCertificates {
        lettre: certificate,
        der,
    })
}

/// rustls for `smtps://`, as lettre sets it up for STARTTLS: ring, TLS 1.2
/// and 1.3, Mozilla's roots (webpki-roots) and `ca`'s.
fn implicit_tls_connector(
    ca: Option<&CaCertificates>,
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in ca.map(|ca| ca.der.as_slice()).unwrap_or_default() {
        roots.add(cert.clone()).map_err(|e| {
            anyhow::anyhow!("exit.smtp_ca_file holds a certificate that does not parse: {e}")
        })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(rustls::ALL_VERSIONS)
    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// An `smtps://` connection's TLS stream, as lettre's SMTP client takes a
/// stream.
struct ImplicitTls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl std::fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImplicitTls").finish_non_exhaustive()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// TLS for `host`, trusting the default roots and `ca`.
fn tls_parameters(host: &str, ca: Option<Certificate>) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(ca);
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("TLS for {host:?}: {e}"))
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
    failure(error).0
}

/// What an SMTP error means for the leak, and whether it is an operator's
/// [`Problem`] (which never bounces a leak).
fn failure(error: &lettre::transport::smtp::Error) -> Failure {
    if let Some(problem) = problem(error) {
        return (problem.attempt(), Some(problem));
    }
    let text = error.to_string();
    let enhanced = enhanced_code(&text);
    if let Some(status) = error.status() {
        let code = match &enhanced {
            Some(e) => format!("{status} {e}"),
            None => status.to_string(),
        };
        if error.is_permanent() {
            return (Attempt::Permanent { code }, None);
        }
        let deferral = status.to_string() == "421"
            || enhanced.as_deref().is_some_and(|e| e.starts_with("4.7."));
        return (Attempt::Temporary { code, deferral }, None);
    }
    let code = if error.is_timeout() {
        "timeout"
    } else {
        "network"
    };
    (
        Attempt::Temporary {
            code: code.into(),
            deferral: false,
        },
        None,
    )
}

/// The operator's problem an error shows, whenever it happens: an AUTH
/// reply code (RFC 4954), lettre's own words for a missing mechanism or
/// STARTTLS, or a TLS failure (rustls's errors come as I/O errors of kind
/// `InvalidData`).
fn problem(error: &lettre::transport::smtp::Error) -> Option<Problem> {
    if let Some(status) = error.status() {
        return match status.to_string().as_str() {
            "530" => Some(Problem::AuthRequired),
            "534" | "535" | "538" => Some(Problem::AuthRejected),
            _ => None,
        };
    }
    if error.is_client() {
        // lettre's text, not the server's.
        let text = error.to_string();
        if text.contains("No compatible authentication mechanism") {
            return Some(Problem::AuthUnavailable);
        }
        if text.contains("STARTTLS is not supported") {
            return Some(Problem::StartTlsUnavailable);
        }
        return None;
    }
    if error.is_tls() {
        return Some(Problem::TlsHandshake);
    }
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            return Some(tls_problem(&io.to_string()));
        }
        source = e.source();
    }
    None
}

/// A TLS failure, from rustls's description of it (produced locally: the
/// server's certificate is only ever named by kind).
fn tls_problem(rustls_text: &str) -> Problem {
    if rustls_text.contains("UnknownIssuer") || rustls_text.contains("UnknownRevocationStatus") {
        Problem::TlsUntrusted
    } else if rustls_text.contains("not valid for name") || rustls_text.contains("NotValidForName")
    {
        Problem::TlsWrongName
    } else if rustls_text.contains("certificate expired")
        || rustls_text.contains("not valid yet")
        || rustls_text.contains("Expired")
        || rustls_text.contains("NotValidYet")
    {
        Problem::TlsExpired
    } else if rustls_text.contains("invalid peer certificate") {
        Problem::TlsCertificate
    } else {
        Problem::TlsHandshake
    }
}

/// Whether a refusal is most likely the smarthost's answer to a client
/// that did not authenticate although it offers AUTH: a permanent 5.7.x
/// (a submission server typically answers `554 5.7.1 ... Access denied`
/// at RCPT). An exit configured without AUTH against such a server would
/// otherwise bounce every leak. The cost: a message refused by policy
/// (5.7.x) by such a server is retried until its lifetime ends.
fn refused_for_want_of_auth(
    error: &lettre::transport::smtp::Error,
    server: &lettre::transport::smtp::extension::ServerInfo,
) -> bool {
    error.is_permanent()
        && enhanced_code(&error.to_string()).is_some_and(|e| e.starts_with("5.7."))
        && server
            .get_auth_mechanism(&[Mechanism::Plain, Mechanism::Login, Mechanism::Xoauth2])
            .is_some()
}

/// A failure at the greeting or EHLO: never the leak's.
fn session_failure(error: &lettre::transport::smtp::Error) -> Failure {
    match failure(error) {
        (Attempt::Permanent { .. }, _) => (
            Problem::SessionRefused.attempt(),
            Some(Problem::SessionRefused),
        ),
        other => other,
    }
}

/// A failure of STARTTLS: the server does not offer it, refuses it (any
/// reply), or the handshake fails. Never the leak's, and never a reason to
/// go on in plaintext.
fn starttls_failure(error: &lettre::transport::smtp::Error) -> Failure {
    if error.is_timeout() {
        return (
            Attempt::Temporary {
                code: "timeout".into(),
                deferral: false,
            },
            None,
        );
    }
    let problem = match problem(error) {
        Some(problem) if problem.code() == "tls" => problem,
        _ if error.status().is_some() => Problem::StartTlsUnavailable,
        _ => Problem::TlsHandshake,
    };
    (problem.attempt(), Some(problem))
}

/// A failure of AUTH: whatever the server answers (but a 421, which
/// closes the session), the credentials or the mechanisms are the
/// operator's to fix.
fn auth_failure(error: &lettre::transport::smtp::Error) -> Failure {
    let status = error.status().map(|s| s.to_string());
    if status.as_deref() == Some("421") || (status.is_none() && !error.is_client()) {
        return failure(error);
    }
    let problem = match problem(error) {
        Some(problem) => problem,
        None => Problem::AuthRejected,
    };
    (problem.attempt(), Some(problem))
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
    fn smtps_urls() {
        let smtps = pool("smtps://127.0.0.1", None);
        assert_eq!(smtps.port, 465);
        assert!(smtps.implicit.is_some() && smtps.tls.is_none());
        assert!(matches!(smtps.starttls, StartTls::Never));
        let smtp = pool("smtp://127.0.0.1", None);
        assert_eq!(smtp.port, 25);
        assert!(smtp.implicit.is_none());
        let new = |url: &str| {
            SmtpPool::new(
                url,
                ClientId::Domain("exit.test".into()),
                None,
                None,
                Duration::from_secs(10),
                1,
            )
        };
        let err = new("smtps://127.0.0.1?tls=required")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("TLS from the start"), "{err}");
        assert!(new("http://127.0.0.1").is_err());
        assert_eq!(new("smtps://mail.example.org:4650").unwrap().port, 4650);
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

    /// A self-signed CA certificate (no key kept), for the CA file checks.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBjzCCATWgAwIBAgIUehd1x9Ehs4kdbTnLROIPClyzUc8wCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRTGVhayB1bml0LXRlc3QgQ0EwIBcNMjYxMTIxMTEwNzQwWhgP
MjEyNjEwMjgxMTA3NDBaMBwxGjAYBgNVBAMMEUxlYWsgdW5pdC10ZXN0IENBMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEBEezZuUBGdkjTR1zMuWc8NI3GbEAQyny
YRdWXXVMOuxiZwP3WD5k5BpwBeWb+i58MUzsl0BS3Iv2bAVZ0e4PM6NTMFEwHQYD
VR0OBBYEFDEUiHwE7xTXmb1WBMPu9ocEjIzlMB8GA1UdIwQYMBaAFDEUiHwE7xTX
mb1WBMPu9ocEjIzlMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIh
APG73ZtPyfvBjGb8KW04DxAe1qUTW652ipCS+Y6aPzvhAiACYWns/X9LvOPaYMo2
14yZuCnbNdQ2FAsD51sBrGeEtQ==
-----END CERTIFICATE-----
";

    #[test]
    fn ca_files_are_checked() {
        parse_ca(CA_PEM.as_bytes()).unwrap();
        let two = format!("{CA_PEM}{CA_PEM}");
        parse_ca(two.as_bytes()).unwrap();
        for (bad, says) in [
            ("", "no PEM certificate"),
            ("not a certificate at all\n", "no PEM certificate"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "no PEM certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "not valid PEM",
            ),
            (
                "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
                "does not parse",
            ),
        ] {
            let err = parse_ca(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    fn smtp_config(dir: &std::path::Path, url: &str) -> Config {
        let mut config = Config::defaults(dir.to_path_buf());
        config.exit.domain = "exit.test".into();
        config.exit.transport = Transport::Smtp;
        config.exit.smtp_url = url.into();
        config
    }

    /// A CA file that is missing, not PEM, or useless (no TLS) stops the
    /// exit at start, naming the setting. (lettre's pool for `smtps://`
    /// needs a runtime.)
    #[tokio::test]
    async fn bad_ca_files_stop_the_exit_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, CA_PEM).unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for url in [
            "smtp://127.0.0.1:2525?tls=required",
            "smtp://127.0.0.1:2525?tls=opportunistic",
            "smtps://127.0.0.1:4650",
        ] {
            let mut config = smtp_config(dir.path(), url);
            config.exit.smtp_ca_file = good.display().to_string();
            Mailer::from_config(&config).unwrap();
            for bad in [&junk, &missing] {
                config.exit.smtp_ca_file = bad.display().to_string();
                let err = format!("{:#}", Mailer::from_config(&config).err().unwrap());
                assert!(err.contains("exit.smtp_ca_file"), "{url}: {err}");
            }
        }
        let mut config = smtp_config(dir.path(), "smtp://127.0.0.1:2525");
        config.exit.smtp_ca_file = good.display().to_string();
        let err = format!("{:#}", Mailer::from_config(&config).err().unwrap());
        assert!(err.contains("uses no TLS"), "{err}");
    }

    #[test]
    fn tls_failures_are_named_by_kind() {
        for (text, problem) in [
            (
                "invalid peer certificate: UnknownIssuer",
                Problem::TlsUntrusted,
            ),
            (
                "invalid peer certificate: certificate not valid for name \"a.b\"; certificate is only valid for c.d",
                Problem::TlsWrongName,
            ),
            (
                "invalid peer certificate: certificate expired: verification time 2 (UNIX), but certificate is not valid after 1 (1 seconds ago)",
                Problem::TlsExpired,
            ),
            (
                "invalid peer certificate: BadSignature",
                Problem::TlsCertificate,
            ),
            (
                "received corrupt message of type InvalidContentType",
                Problem::TlsHandshake,
            ),
            (
                "received fatal alert: HandshakeFailure",
                Problem::TlsHandshake,
            ),
        ] {
            assert_eq!(tls_problem(text), problem, "{text}");
            assert_eq!(problem.code(), "tls");
        }
    }

    /// A scripted SMTP server for one session on 127.0.0.1: `reply` answers
    /// each command line (None: the usual 250); what the client said is
    /// returned when the session ends.
    async fn scripted(
        greeting: &'static str,
        reply: fn(&str) -> Option<&'static str>,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            let mut said = Vec::new();
            write.write_all(greeting.as_bytes()).await.unwrap();
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                said.push(line.clone());
                if in_data {
                    if line == "." {
                        in_data = false;
                        let _ = write.write_all(b"250 2.0.0 Ok\r\n").await;
                    }
                    continue;
                }
                let upper = line.to_ascii_uppercase();
                let answer = reply(&upper).unwrap_or(if upper.starts_with("EHLO") {
                    "250-fake.test\r\n250 8BITMIME\r\n"
                } else if upper.starts_with("DATA") {
                    "354 go ahead\r\n"
                } else if upper.starts_with("QUIT") {
                    "221 Bye\r\n"
                } else {
                    "250 2.0.0 Ok\r\n"
                });
                in_data = upper.starts_with("DATA") && answer.starts_with("354");
                if write.write_all(answer.as_bytes()).await.is_err() || upper.starts_with("QUIT") {
                    break;
                }
            }
            said
        });
        (port, task)
    }

    fn message() -> Message {
        Message::builder()
            .from("leak@exit.test".parse().unwrap())
            .to("alice@secret.example".parse().unwrap())
            .subject("hi")
            .body("hello".to_owned())
            .unwrap()
    }

    fn pool(url: &str, credentials: Option<Credentials>) -> SmtpPool {
        SmtpPool::new(
            url,
            ClientId::Domain("exit.test".into()),
            credentials,
            None,
            Duration::from_secs(10),
            1,
        )
        .unwrap()
    }

    fn alice() -> Option<Credentials> {
        Some(Credentials::new("alice".into(), "wrong".into()))
    }

    fn assert_no_mail(said: &[String]) {
        assert!(
            !said
                .iter()
                .any(|l| l.to_ascii_uppercase().starts_with("MAIL")),
            "no transaction may start: {said:?}"
        );
    }

    /// A 535 to AUTH is the operator's to fix: temporary, code `auth`, no
    /// trace of the server's text; no email is sent.
    #[tokio::test]
    async fn a_refused_auth_never_bounces() {
        let (port, server) = scripted("220 fake ESMTP\r\n", |c| {
            if c.starts_with("EHLO") {
                Some("250-fake.test\r\n250 AUTH PLAIN LOGIN\r\n")
            } else if c.starts_with("AUTH") {
                Some("535 5.7.8 Error: authentication failed: alice@secret.example\r\n")
            } else {
                None
            }
        })
        .await;
        let (attempt, problem) = pool(&format!("smtp://alice@127.0.0.1:{port}"), alice())
            .send(&message())
            .await;
        assert_eq!(
            attempt,
            Attempt::Temporary {
                code: "auth".into(),
                deferral: false
            }
        );
        assert_eq!(problem, Some(Problem::AuthRejected));
        assert!(!problem.unwrap().explain().contains("secret"));
        let said = server.await.unwrap();
        assert!(said.iter().any(|l| l.starts_with("AUTH PLAIN")), "{said:?}");
        assert_no_mail(&said);
    }

    /// AUTH configured, but the server offers no mechanism we speak.
    #[tokio::test]
    async fn no_auth_mechanism_never_bounces() {
        let (port, server) = scripted("220 fake ESMTP\r\n", |_| None).await;
        let (attempt, problem) = pool(&format!("smtp://alice@127.0.0.1:{port}"), alice())
            .send(&message())
            .await;
        assert_eq!(problem, Some(Problem::AuthUnavailable));
        assert!(matches!(attempt, Attempt::Temporary { code, .. } if code == "auth"));
        assert_no_mail(&server.await.unwrap());
    }

    /// A 530 at MAIL (AUTH or STARTTLS needed first) is not the leak's.
    #[tokio::test]
    async fn a_530_never_bounces() {
        let (port, server) = scripted("220 fake ESMTP\r\n", |c| {
            c.starts_with("MAIL")
                .then_some("530 5.7.0 Must issue a STARTTLS command first\r\n")
        })
        .await;
        let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}"), None)
            .send(&message())
            .await;
        assert_eq!(problem, Some(Problem::AuthRequired));
        assert!(matches!(attempt, Attempt::Temporary { code, .. } if code == "auth"));
        let said = server.await.unwrap();
        assert!(!said.iter().any(|l| l.starts_with("RCPT")), "{said:?}");
    }

    /// No AUTH configured, a server that offers it and refuses the RCPT
    /// with 5.7.1: the operator forgot the credentials, not the leak's
    /// fault. Without AUTH on offer, the same refusal bounces.
    #[tokio::test]
    async fn a_refusal_for_want_of_auth_never_bounces() {
        let (port, _server) = scripted("220 fake ESMTP\r\n", |c| {
            if c.starts_with("EHLO") {
                Some("250-fake.test\r\n250 AUTH PLAIN LOGIN\r\n")
            } else if c.starts_with("RCPT") {
                Some("554 5.7.1 <alice@secret.example>: Relay access denied\r\n")
            } else {
                None
            }
        })
        .await;
        let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}"), None)
            .send(&message())
            .await;
        assert_eq!(problem, Some(Problem::AuthRequired));
        assert!(matches!(attempt, Attempt::Temporary { code, .. } if code == "auth"));

        let (port, _server) = scripted("220 fake ESMTP\r\n", |c| {
            c.starts_with("RCPT")
                .then_some("554 5.7.1 <alice@secret.example>: Relay access denied\r\n")
        })
        .await;
        let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}"), None)
            .send(&message())
            .await;
        assert_eq!(problem, None);
        assert_eq!(
            attempt,
            Attempt::Permanent {
                code: "554 5.7.1".into()
            }
        );
    }

    /// `tls=required` and no STARTTLS offered: nothing is sent in plaintext.
    #[tokio::test]
    async fn required_starttls_not_offered_sends_nothing() {
        let (port, server) = scripted("220 fake ESMTP\r\n", |_| None).await;
        let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}?tls=required"), None)
            .send(&message())
            .await;
        assert_eq!(problem, Some(Problem::StartTlsUnavailable));
        assert!(matches!(attempt, Attempt::Temporary { code, .. } if code == "tls"));
        assert_no_mail(&server.await.unwrap());
    }

    /// STARTTLS refused with a 5xx, or a handshake with a server that then
    /// speaks no TLS: temporary `tls`, nothing sent.
    #[tokio::test]
    async fn failed_starttls_sends_nothing() {
        let offered = |c: &str| {
            if c.starts_with("EHLO") {
                Some("250-fake.test\r\n250 STARTTLS\r\n")
            } else if c.starts_with("STARTTLS") {
                Some("554 5.7.0 no TLS for alice@secret.example\r\n")
            } else {
                None
            }
        };
        let (port, server) = scripted("220 fake ESMTP\r\n", offered).await;
        let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}?tls=required"), None)
            .send(&message())
            .await;
        assert_eq!(problem, Some(Problem::StartTlsUnavailable));
        assert!(matches!(attempt, Attempt::Temporary { code, .. } if code == "tls"));
        assert_no_mail(&server.await.unwrap());

        let garbage = |c: &str| {
            if c.starts_with("EHLO") {
                Some("250-fake.test\r\n250 STARTTLS\r\n")
            } else if c.starts_with("STARTTLS") {
                Some("220 go ahead\r\nthis is not TLS at all, but plain text\r\n")
            } else {
                None
            }
        };
        let (port, server) = scripted("220 fake ESMTP\r\n", garbage).await;
        let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}?tls=required"), None)
            .send(&message())
            .await;
        assert_eq!(problem, Some(Problem::TlsHandshake));
        assert!(matches!(attempt, Attempt::Temporary { code, .. } if code == "tls"));
        server.abort();
    }

    /// A 554 greeting refuses the session before any leak is named: not
    /// the leak's either. A 550 at RCPT still bounces.
    #[tokio::test]
    async fn only_a_refusal_of_the_leak_bounces() {
        let (port, _server) = scripted("554 5.7.1 go away\r\n", |_| None).await;
        let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}"), None)
            .send(&message())
            .await;
        assert_eq!(problem, Some(Problem::SessionRefused));
        assert!(matches!(attempt, Attempt::Temporary { .. }), "{attempt:?}");

        let (port, _server) = scripted("220 fake ESMTP\r\n", |c| {
            c.starts_with("RCPT")
                .then_some("550 5.1.1 <alice@secret.example>: no such user\r\n")
        })
        .await;
        let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}"), None)
            .send(&message())
            .await;
        assert_eq!(problem, None);
        assert_eq!(
            attempt,
            Attempt::Permanent {
                code: "550 5.1.1".into()
            }
        );
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
