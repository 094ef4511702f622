//! TLS to the smarthost: rustls (ring), TLS 1.2 and 1.3, Mozilla's roots
//! (webpki-roots) and the operator's `exit.smtp_ca_file`, for STARTTLS
//! (through lettre) and for `smtps://` (our own connector, so the socket
//! can have `TCP_NODELAY`).

use lettre::transport::smtp::client::{AsyncTokioStream, Certificate, TlsParameters};
use rustls::pki_types::{CertificateDer, pem::PemObject as _};

use crate::exit::error::ExitError;

const CA_FILE: &str = "exit.smtp_ca_file";

/// (`smtps://`).
#[derive(Debug)]
pub(super) struct CaCertificates {
    pub(super) lettre: Certificate,
    pub(super) der: Vec<CertificateDer<'static>>,
}

/// PEM CA certificates, checked as [`super::ca_file`] says.
pub(super) fn parse_ca(pem: &[u8]) -> Result<CaCertificates, ExitError> {
    let bad = |reason: String| ExitError::setting(CA_FILE, reason);
    // lettre (with rustls) takes a file without any certificate as an
    // empty list: say so instead.
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let certificate =
        Certificate::from_pem(pem).map_err(|e| bad(format!("is not valid PEM: {e}")))?;
    // Adding them to a root store parses them.
    TlsParameters::builder("localhost".into())
        .add_root_certificate(certificate.clone())
        .build()
        .map_err(|e| bad(format!("holds a certificate that does not parse: {e}")))?;
    let der = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not valid PEM: {e}")))?;
    Ok(CaCertificates {
        lettre: certificate,
        der,
    })
}

/// rustls for `smtps://`, as lettre sets it up for STARTTLS: ring, TLS 1.2
/// and 1.3, Mozilla's roots (webpki-roots) and `ca`'s.
pub(super) fn implicit_tls_connector(
    ca: Option<&CaCertificates>,
) -> Result<tokio_rustls::TlsConnector, ExitError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in ca.map(|ca| ca.der.as_slice()).unwrap_or_default() {
        roots.add(cert.clone()).map_err(|e| {
            ExitError::setting(
                CA_FILE,
                format!("holds a certificate that does not parse: {e}"),
            )
        })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(rustls::ALL_VERSIONS)
    .map_err(|e| ExitError::setting("exit.smtp_url", format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// An `smtps://` connection's TLS stream, as lettre's SMTP client takes a
/// stream.
pub(super) struct ImplicitTls(pub(super) tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

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
pub(super) fn tls_parameters(
    host: &str,
    ca: Option<Certificate>,
) -> Result<TlsParameters, ExitError> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(ca);
    }
    builder
        .build()
        .map_err(|e| ExitError::setting("exit.smtp_url", format!("TLS for {host:?}: {e}")))
}

/// A self-signed CA certificate (no key kept), for the CA file checks.
#[cfg(test)]
pub(super) const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ca_files_are_checked() {
        parse_ca(TEST_CA_PEM.as_bytes()).unwrap();
        let two = format!("{TEST_CA_PEM}{TEST_CA_PEM}");
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
}
