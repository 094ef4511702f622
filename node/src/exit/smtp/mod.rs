//! Handing email on: the transport the configuration names (`.eml` files
//! or the smarthost), and what one attempt did.
//!
//! - [`pool`]: our pool of SMTP connections to the smarthost (`smtp://`,
//!   STARTTLS, `smtps://`, AUTH);
//! - [`tls`]: the TLS set-up (rustls, Mozilla's roots and
//!   `exit.smtp_ca_file`);
//! - [`classify`]: what an SMTP or TLS error means for the leak (bounce,
//!   retry, slow down) and for the operator ([`Problem`]), with rustls's
//!   errors matched by type.
//!
//! When a failed attempt is tried again is not decided here: see
//! [`super::retry`].

mod attempt;
pub mod classify;
mod dsn;
pub mod pool;
pub mod tls;

use std::time::Duration;

use lettre::{
    AsyncFileTransport, AsyncTransport as _, Tokio1Executor,
    address::Envelope,
    transport::smtp::{authentication::Credentials, extension::ClientId},
};

pub use self::{attempt::Attempt, classify::Problem, pool::SmtpPool};
use crate::config::{Config, Transport};
use crate::exit::error::ExitError;

/// Where email goes, and the operator's problem with it, if any.
pub struct Mailer {
    transport: MailTransport,
    /// The last [`Problem`] logged: a problem is logged when it appears or
    /// changes, and its end when an email goes through again.
    problem: std::sync::Mutex<Option<Problem>>,
}

/// What a 250 from the transport means for the leak's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Final: the file transport wrote the email where it is read.
    Final,
    /// The mail server took it and will send delivery status notifications
    /// to the leak's return path.
    Notified,
    /// The mail server took it and sends no notifications (none were asked,
    /// or it does not support them): nothing more will be known.
    Unknown,
}

/// The transport of a [`Mailer`].
enum MailTransport {
    /// `.eml` files in a directory.
    File(AsyncFileTransport<Tokio1Executor>),
    /// The smarthost over `smtp://` (plain or STARTTLS) or `smtps://`
    /// (implicit TLS), with our pool.
    Smtp(Box<SmtpPool>),
}

impl Mailer {
    /// The transport the configuration names. Reads the password and CA
    /// files, so that a bad one stops the exit at start with a clear error.
    pub fn from_config(config: &Config) -> Result<Self, ExitError> {
        let exit = &config.exit;
        let transport = match exit.transport {
            Transport::File => {
                let dir = config.exit_file_dir();
                std::fs::create_dir_all(&dir)
                    .map_err(|e| ExitError::io(format!("cannot create {}", dir.display()), e))?;
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
    pub async fn send(
        &self,
        envelope: &Envelope,
        bytes: &[u8],
        envid: Option<&str>,
    ) -> (Attempt, Handoff) {
        let (attempt, problem, handoff) = match &self.transport {
            MailTransport::File(t) => match t.send_raw(envelope, bytes).await {
                Ok(_) => (Attempt::Delivered, None, Handoff::Final),
                Err(_) => (
                    Attempt::Temporary {
                        code: "io".into(),
                        deferral: false,
                    },
                    None,
                    Handoff::Final,
                ),
            },
            MailTransport::Smtp(pool) => {
                let (attempt, problem, notified) = pool.send(envelope, bytes, envid).await;
                let handoff = if notified {
                    Handoff::Notified
                } else {
                    Handoff::Unknown
                };
                (attempt, problem, handoff)
            }
        };
        self.report(&attempt, problem);
        (attempt, handoff)
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
fn credentials(config: &Config) -> Result<Option<Credentials>, ExitError> {
    let exit = &config.exit;
    let file = exit.smtp_password_file.trim();
    if file.is_empty() {
        return Ok(None);
    }
    let password = std::fs::read_to_string(file)
        .map_err(|e| ExitError::read("exit.smtp_password_file", file, e))?;
    let user = url_user(&exit.smtp_url).ok_or_else(|| {
        ExitError::setting(
            "exit.smtp_password_file",
            "is set but exit.smtp_url names no user (smtp://user@host)",
        )
    })?;
    Ok(Some(Credentials::new(user, password.trim().to_owned())))
}

/// The CA certificates of `exit.smtp_ca_file`, checked: the file must hold
/// at least one PEM certificate, and every one must parse.
fn ca_file(config: &Config) -> Result<Option<Vec<u8>>, ExitError> {
    let file = config.exit.smtp_ca_file.trim();
    if file.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(file).map_err(|e| ExitError::read("exit.smtp_ca_file", file, e))?;
    tls::parse_ca(&pem).map_err(|e| match e {
        ExitError::Setting { setting, reason } => {
            ExitError::setting(setting, format!("{file} {reason}"))
        }
        other => other,
    })?;
    Ok(Some(pem))
}

/// The user name in an SMTP URL, if any.
fn url_user(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let user = userinfo.split(':').next()?;
    (!user.is_empty()).then(|| user.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn url_users() {
        assert_eq!(
            url_user("smtp://alice@host:587?tls=required").as_deref(),
            Some("alice")
        );
        assert_eq!(url_user("smtps://bob:pw@host").as_deref(), Some("bob"));
        assert_eq!(url_user("smtp://host:25"), None);
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
        std::fs::write(&good, tls::TEST_CA_PEM).unwrap();
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
}
