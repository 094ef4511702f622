//! A recipient's mail provider, as far as an exit can see it: it signs
//! what its user sends with DKIM (Ed25519, RFC 8463), and publishes its
//! key in the DNS ([`super::dns::Dnsmasq::start_with`]).

use base64::Engine as _;
use mail_auth::{
    common::{crypto::Ed25519Key, headers::HeaderWriter as _},
    dkim::DkimSigner,
};

/// A provider's signing domain, selector and key.
pub struct Provider {
    /// The domain it signs as (`d=`).
    pub domain: String,
    /// Its selector (`s=`).
    pub selector: String,
    seed: [u8; 32],
}

impl Provider {
    /// A provider for `domain` with a key of its own.
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.to_owned(),
            selector: "s1".into(),
            seed: crate::random32(),
        }
    }

    /// The DNS name and TXT text of its key.
    pub fn key_record(&self) -> (String, String) {
        let public = leak_protocol::crypto::ed25519_public(&self.seed);
        (
            format!("{}._domainkey.{}", self.selector, self.domain),
            format!(
                "v=DKIM1; k=ed25519; p={}",
                base64::engine::general_purpose::STANDARD.encode(public)
            ),
        )
    }

    /// `message` (CRLF lines) with its signature over From, To, Subject and
    /// Date on top, as the provider sends it on.
    pub fn sign(&self, message: &str) -> Vec<u8> {
        let public = leak_protocol::crypto::ed25519_public(&self.seed);
        let key = Ed25519Key::from_seed_and_public_key(&self.seed, &public)
            .unwrap_or_else(|e| panic!("an Ed25519 key: {e}"));
        let signature = DkimSigner::from_key(key)
            .domain(self.domain.as_str())
            .selector(self.selector.as_str())
            .headers(["From", "To", "Subject", "Date"])
            .sign(message.as_bytes())
            .unwrap_or_else(|e| panic!("signing: {e}"));
        let mut out = signature.to_header().into_bytes();
        out.extend_from_slice(message.as_bytes());
        out
    }

    /// What a mail client sends for a `mailto:ADDRESS?subject=SUBJECT` link
    /// clicked by `from`, signed.
    pub fn mailto(&self, from: &str, link: &str) -> Vec<u8> {
        let link = link.strip_prefix("mailto:").unwrap_or(link);
        let (to, query) = link.split_once('?').unwrap_or((link, ""));
        let subject = query
            .split('&')
            .find_map(|p| p.strip_prefix("subject="))
            .unwrap_or("")
            .replace("%20", " ");
        self.sign(&format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
             Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{}@{}>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             This message was sent to unsubscribe.\r\n",
            hex_of(&crate::random32()[..8]),
            self.domain
        ))
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hands `message` to the LMTP server at `addr` (an exit's inbound
/// listener) for `to`, as the exit's mail server would; returns the
/// server's answer to the message.
pub fn lmtp_send(addr: std::net::SocketAddr, from: &str, to: &str, message: &[u8]) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("LMTP {addr}: {e}"));
    let mut reader = BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut writer = stream;
    let mut answer = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("LMTP read: {e}"));
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    };
    let greeting = answer();
    assert!(greeting.starts_with("220"), "{greeting}");
    let mut say = |line: &str| {
        writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("LMTP write: {e}"));
    };
    say("LHLO provider.test");
    say(&format!("MAIL FROM:<{from}>"));
    say(&format!("RCPT TO:<{to}>"));
    say("DATA");
    let mut lines = Vec::new();
    for _ in 0..4 {
        lines.push(answer());
    }
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with('2') || l.starts_with('3')),
        "{lines:?}"
    );
    let mut body = Vec::new();
    let message = message.strip_suffix(b"\n").unwrap_or(message);
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            body.push(b'.');
        }
        body.extend_from_slice(line);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\nQUIT\r\n");
    writer
        .write_all(&body)
        .unwrap_or_else(|e| panic!("LMTP write: {e}"));
    answer()
}
