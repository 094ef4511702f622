//! The pool against scripted SMTP servers.

#![allow(clippy::unwrap_used)]
use super::*;

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

impl SmtpPool {
    async fn send_message(&self, message: &lettre::Message) -> (Attempt, Option<Problem>) {
        let (attempt, problem, _) = self
            .send(message.envelope(), &message.formatted(), None)
            .await;
        (attempt, problem)
    }
}

fn message() -> lettre::Message {
    lettre::Message::builder()
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
        .send_message(&message())
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
        .send_message(&message())
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
        .send_message(&message())
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
        .send_message(&message())
        .await;
    assert_eq!(problem, Some(Problem::AuthRequired));
    assert!(matches!(attempt, Attempt::Temporary { code, .. } if code == "auth"));

    let (port, _server) = scripted("220 fake ESMTP\r\n", |c| {
        c.starts_with("RCPT")
            .then_some("554 5.7.1 <alice@secret.example>: Relay access denied\r\n")
    })
    .await;
    let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}"), None)
        .send_message(&message())
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
        .send_message(&message())
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
        .send_message(&message())
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
        .send_message(&message())
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
        .send_message(&message())
        .await;
    assert_eq!(problem, Some(Problem::SessionRefused));
    assert!(matches!(attempt, Attempt::Temporary { .. }), "{attempt:?}");

    let (port, _server) = scripted("220 fake ESMTP\r\n", |c| {
        c.starts_with("RCPT")
            .then_some("550 5.1.1 <alice@secret.example>: no such user\r\n")
    })
    .await;
    let (attempt, problem) = pool(&format!("smtp://127.0.0.1:{port}"), None)
        .send_message(&message())
        .await;
    assert_eq!(problem, None);
    assert_eq!(
        attempt,
        Attempt::Permanent {
            code: "550 5.1.1".into()
        }
    );
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1
/// (valid from 2020 to 2126; the keys are throwaway test keys), for the TLS
/// failures below.
const TLS_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBdTCCARqgAwIBAgICEAAwCgYIKoZIzj0EAwIwIDEeMBwGA1UEAwwVTGVhayB1
bml0LXRlc3QgVExTIENBMCAXDTIwMDEwMTAwMDAwMFoYDzIxMjYwMTAxMDAwMDAw
WjAgMR4wHAYDVQQDDBVMZWFrIHVuaXQtdGVzdCBUTFMgQ0EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAQHLC+5aDQnMZBtALixRMMudL+FNkWRAHU/pW81eW8mnFlI
ZGMBstvFeHdpzqf5IS2LvwlgL/iESjP8A1JlElZNo0IwQDAPBgNVHRMBAf8EBTAD
AQH/MA4GA1UdDwEB/wQEAwICBDAdBgNVHQ4EFgQUzsYhorwtZvU7ZspBaV+rgnF9
Cx0wCgYIKoZIzj0EAwIDSQAwRgIhAMBzdj65qUOZ25Z1mGbNN5hHcZ4cslE/vX51
NfsG9iXaAiEAqamcXzSRCiUGrFcEOd4CNtrKJlWIn2JOZZ5VKvm2/TQ=
-----END CERTIFICATE-----
";
const TLS_LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIBpDCCAUqgAwIBAgICEAEwCgYIKoZIzj0EAwIwIDEeMBwGA1UEAwwVTGVhayB1
bml0LXRlc3QgVExTIENBMCAXDTIwMDEwMTAwMDAwMFoYDzIxMjYwMTAxMDAwMDAw
WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AATy2G9Q7KTsZaCG0/zwX8xuk39hE4Ks//bHWL4WmURf2CcURK1eXt7II13K/w2M
GfQMg6ThGDRw2NKZQYuvIjKgo34wfDAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8A
AAEwCQYDVR0TBAIwADATBgNVHSUEDDAKBggrBgEFBQcDATAdBgNVHQ4EFgQU51YG
unC8cDIlQ4K2paFE46rmh6IwHwYDVR0jBBgwFoAUzsYhorwtZvU7ZspBaV+rgnF9
Cx0wCgYIKoZIzj0EAwIDSAAwRQIhAIwKt3M2xPClYxVd11/P5Qnjowf6ZvObg53K
ldqvG6A+AiA9HlLOR1tqW5M+GsCSvYg1FExuf99dNjSXpujDCdzMYw==
-----END CERTIFICATE-----
";
const TLS_LEAF_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0/VeYxMwrPYTXR8K
uoh1R15RJBGcTOld+BYA7MJcgjehRANCAATy2G9Q7KTsZaCG0/zwX8xuk39hE4Ks
//bHWL4WmURf2CcURK1eXt7II13K/w2MGfQMg6ThGDRw2NKZQYuvIjKg
-----END PRIVATE KEY-----
";

/// A TLS server on `ip` with [`TLS_LEAF`], for one session; with
/// `starttls`, it speaks SMTP up to STARTTLS first. Only the handshake
/// matters: the client is expected to refuse the certificate.
async fn tls_server(ip: &str, starttls: bool) -> u16 {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let certs = CertificateDer::pem_slice_iter(TLS_LEAF.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(TLS_LEAF_KEY.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(rustls::ALL_VERSIONS)
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        if starttls {
            socket.write_all(b"220 fake ESMTP\r\n").await.unwrap();
            // The client waits for our 220 before its ClientHello: no
            // TLS byte is read into this buffer.
            let mut lines = tokio::io::BufReader::new(&mut socket);
            let mut line = String::new();
            while lines.read_line(&mut line).await.unwrap_or(0) > 0 {
                let upper = line.to_ascii_uppercase();
                let answer: &[u8] = if upper.starts_with("EHLO") {
                    b"250-fake.test\r\n250 STARTTLS\r\n"
                } else if upper.starts_with("STARTTLS") {
                    b"220 go ahead\r\n"
                } else {
                    b"250 Ok\r\n"
                };
                lines.get_mut().write_all(answer).await.unwrap();
                if upper.starts_with("STARTTLS") {
                    break;
                }
                line.clear();
            }
        }
        let _ = acceptor.accept(socket).await;
    });
    port
}

async fn tls_problem(url: &str, ca: Option<&str>) -> Option<Problem> {
    let pool = SmtpPool::new(
        url,
        ClientId::Domain("exit.test".into()),
        None,
        ca.map(str::as_bytes),
        Duration::from_secs(10),
        1,
    )
    .unwrap();
    let (attempt, problem) = pool.send_message(&message()).await;
    assert!(
        matches!(&attempt, Attempt::Temporary { code, .. } if code == "tls"),
        "{url}: {attempt:?}"
    );
    problem
}

/// A real handshake's rustls error is named by its type, over STARTTLS
/// (lettre's stream) and over implicit TLS (ours): a certificate from
/// a CA the exit does not trust, and one that does not name the host.
#[tokio::test]
async fn real_tls_failures_are_named_by_kind() {
    for starttls in [true, false] {
        let url = |ip: &str, port: u16| {
            if starttls {
                format!("smtp://{ip}:{port}?tls=required")
            } else {
                format!("smtps://{ip}:{port}")
            }
        };
        let port = tls_server("127.0.0.1", starttls).await;
        assert_eq!(
            tls_problem(&url("127.0.0.1", port), None).await,
            Some(Problem::TlsUntrusted),
            "starttls: {starttls}"
        );
        // Trusted, but the certificate names 127.0.0.1, not 127.0.0.2.
        let port = tls_server("127.0.0.2", starttls).await;
        assert_eq!(
            tls_problem(&url("127.0.0.2", port), Some(TLS_CA)).await,
            Some(Problem::TlsWrongName),
            "starttls: {starttls}"
        );
    }
}
