//! What a failed SMTP exchange means: for the leak (bounce it, retry it,
//! slow down) and for the operator (a [`Problem`] to fix, which never
//! bounces a leak).
//!
//! Only codes are kept (`451 4.7.1`, `tls`, `network`): never the server's
//! text, which can name the recipient. TLS failures are told apart by
//! rustls's error *type* ([`rustls::Error`], [`rustls::CertificateError`]),
//! found in the error's source chain, never by its wording.

use lettre::transport::smtp::authentication::Mechanism;
use rustls::CertificateError;

use super::attempt::Attempt;

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

    pub(super) fn attempt(self) -> Attempt {
        Attempt::Temporary {
            code: self.code().into(),
            deferral: false,
        }
    }
}

/// A failed attempt and, when the smarthost cannot take any email, why.
pub(super) type Failure = (Attempt, Option<Problem>);

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

/// What an SMTP error means for the leak, and whether it is an operator's
/// [`Problem`] (which never bounces a leak).
pub(super) fn failure(error: &lettre::transport::smtp::Error) -> Failure {
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
        if let Some(problem) = e.downcast_ref::<std::io::Error>().and_then(tls_io_problem) {
            return Some(problem);
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(rustls_problem(tls));
        }
        source = e.source();
    }
    None
}

/// The TLS problem an I/O error of a TLS stream shows, if it is one:
/// tokio-rustls (ours for `smtps://`, lettre's for STARTTLS) reports a
/// failed handshake as an I/O error of kind `InvalidData` holding the
/// [`rustls::Error`].
pub(super) fn tls_io_problem(io: &std::io::Error) -> Option<Problem> {
    if io.kind() != std::io::ErrorKind::InvalidData {
        return None;
    }
    Some(
        io.get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .map_or(Problem::TlsHandshake, rustls_problem),
    )
}

/// The TLS problem a rustls error shows, by its type (the server's
/// certificate is only ever named by kind).
pub(super) fn rustls_problem(error: &rustls::Error) -> Problem {
    match error {
        rustls::Error::InvalidCertificate(e) => certificate_problem(e),
        _ => Problem::TlsHandshake,
    }
}

fn certificate_problem(error: &CertificateError) -> Problem {
    match error {
        CertificateError::UnknownIssuer | CertificateError::UnknownRevocationStatus => {
            Problem::TlsUntrusted
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            Problem::TlsWrongName
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => Problem::TlsExpired,
        _ => Problem::TlsCertificate,
    }
}

/// Whether a refusal is most likely the smarthost's answer to a client
/// that did not authenticate although it offers AUTH: a permanent 5.7.x
/// (a submission server typically answers `554 5.7.1 ... Access denied`
/// at RCPT). An exit configured without AUTH against such a server would
/// otherwise bounce every leak. The cost: a message refused by policy
/// (5.7.x) by such a server is retried until its lifetime ends.
pub(super) fn refused_for_want_of_auth(
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
pub(super) fn session_failure(error: &lettre::transport::smtp::Error) -> Failure {
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
pub(super) fn starttls_failure(error: &lettre::transport::smtp::Error) -> Failure {
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
pub(super) fn auth_failure(error: &lettre::transport::smtp::Error) -> Failure {
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
    fn tls_failures_are_named_by_type() {
        use rustls::{AlertDescription, Error, InvalidMessage};
        let when = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(2));
        let after =
            rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(1));
        for (error, problem) in [
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                Problem::TlsUntrusted,
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidForName),
                Problem::TlsWrongName,
            ),
            (
                Error::InvalidCertificate(CertificateError::ExpiredContext {
                    time: when,
                    not_after: after,
                }),
                Problem::TlsExpired,
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidYet),
                Problem::TlsExpired,
            ),
            (
                Error::InvalidCertificate(CertificateError::BadSignature),
                Problem::TlsCertificate,
            ),
            (
                Error::InvalidMessage(InvalidMessage::InvalidContentType),
                Problem::TlsHandshake,
            ),
            (
                Error::AlertReceived(AlertDescription::HandshakeFailure),
                Problem::TlsHandshake,
            ),
        ] {
            assert_eq!(rustls_problem(&error), problem, "{error:?}");
            assert_eq!(problem.code(), "tls");
            // As tokio-rustls reports it.
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
            assert_eq!(tls_io_problem(&io), Some(problem));
        }
        // Other I/O errors are not TLS's; an InvalidData without a rustls
        // error inside is a failed handshake.
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(tls_io_problem(&reset), None);
        let garbled = std::io::Error::new(std::io::ErrorKind::InvalidData, "garbled");
        assert_eq!(tls_io_problem(&garbled), Some(Problem::TlsHandshake));
    }
}
