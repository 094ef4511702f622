//! Our pool of SMTP connections to the smarthost.

use std::time::Duration;

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters},
        extension::ClientId,
    },
};
use rustls::pki_types::ServerName;

use super::{
    attempt::Attempt,
    classify::{
        Failure, Problem, auth_failure, failure, refused_for_want_of_auth, session_failure,
        starttls_failure, tls_io_problem,
    },
    tls::{ImplicitTls, implicit_tls_connector, parse_ca, tls_parameters},
};
use crate::exit::error::ExitError;

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

/// The setting the URL comes from.
const SMTP_URL: &str = "exit.smtp_url";

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
    ) -> Result<Self, ExitError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ExitError::setting(SMTP_URL, format!("{url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "smtp" | "smtps") {
            return Err(ExitError::setting(
                SMTP_URL,
                format!("{url:?}: expected smtp:// or smtps://"),
            ));
        }
        let implicit_tls = parsed.scheme() == "smtps";
        let host = parsed
            .host_str()
            .ok_or_else(|| ExitError::setting(SMTP_URL, format!("{url:?} names no host")))?
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
            Some(_) if implicit_tls => {
                return Err(ExitError::setting(
                    SMTP_URL,
                    format!("{url:?}: smtps:// is TLS from the start; tls= is for smtp://"),
                ));
            }
            Some("opportunistic") => StartTls::Opportunistic,
            Some("required") => StartTls::Required,
            Some(other) => {
                return Err(ExitError::setting(
                    SMTP_URL,
                    format!("{url:?}: tls={other} (expected required, opportunistic or none)"),
                ));
            }
        };
        let ca = ca.map(parse_ca).transpose()?;
        let implicit = if implicit_tls {
            let server_name = ServerName::try_from(host.clone())
                .map_err(|e| ExitError::setting(SMTP_URL, format!("{url:?}: {e}")))?;
            Some((implicit_tls_connector(ca.as_ref())?, server_name))
        } else {
            None
        };
        let tls = match starttls {
            StartTls::Never if implicit_tls => None,
            StartTls::Never => {
                if ca.is_some() {
                    return Err(ExitError::setting(
                        "exit.smtp_ca_file",
                        format!(
                            "set but exit.smtp_url {url:?} uses no TLS \
                             (add ?tls=required, or use smtps://)"
                        ),
                    ));
                }
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
                    Ok(Err(e)) => {
                        let problem = tls_io_problem(&e).unwrap_or(Problem::TlsHandshake);
                        return Err((problem.attempt(), Some(problem)));
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
    /// a fresh one if that idle connection turns out to be dead). With
    /// `envid`, delivery status notifications are asked for (RFC 3461:
    /// `RET=HDRS ENVID=..`, `NOTIFY=SUCCESS,FAILURE,DELAY`); the flag says
    /// whether the server took that request.
    pub async fn send(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        envid: Option<&str>,
    ) -> (Attempt, Option<Problem>, bool) {
        let mut notified = false;
        let (attempt, problem) = self.send_once(envelope, bytes, envid, &mut notified).await;
        (attempt, problem, notified)
    }

    async fn send_once(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        envid: Option<&str>,
        notified: &mut bool,
    ) -> (Attempt, Option<Problem>) {
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
            let result = tokio::time::timeout(
                self.timeout,
                super::dsn::transmit(&mut conn, envelope, bytes, envid),
            )
            .await;
            match result {
                Ok(Ok(with_notifications)) => {
                    *notified = with_notifications;
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

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
