//! DKIM keys for an exit and the DNS records that go with them
//! (`leak-node dkim-keys`).
//!
//! Two keys: RSA-2048, which every large mailbox provider verifies (and
//! which Yahoo's and Microsoft's bulk-sender rules and Gmail's one-click
//! unsubscribe need passing), and Ed25519 (RFC 8463), shorter and faster,
//! verified by a growing part of the receivers. The exit signs with both
//! (`exit.dkim_selector` and `exit.dkim_ed25519_selector`): a receiver that
//! knows only RSA ignores the other signature.

use std::{
    io::Write as _,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use rsa::{
    RsaPrivateKey,
    pkcs1::{EncodeRsaPrivateKey as _, LineEnding},
    pkcs8::EncodePublicKey as _,
};
use zeroize::Zeroizing;

/// The RSA key's size in bits.
pub const RSA_BITS: usize = 2048;
/// The file names the keys are written to.
pub const RSA_FILE: &str = "dkim-rsa.key";
/// The Ed25519 key's file name.
pub const ED25519_FILE: &str = "dkim-ed25519.key";

/// A pair of DKIM keys.
pub struct DkimKeys {
    /// The RSA private key, PKCS#1 PEM (what `exit.dkim_key_file` holds).
    pub rsa_pem: Zeroizing<String>,
    /// The Ed25519 seed in base64 (what `exit.dkim_ed25519_key_file` holds).
    pub ed25519_seed: Zeroizing<String>,
    /// The RSA public key (SubjectPublicKeyInfo, DER) in base64: `p=`.
    pub rsa_public: String,
    /// The raw Ed25519 public key in base64: `p=`.
    pub ed25519_public: String,
}

/// Why keys could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum DkimKeysError {
    /// The RSA key could not be generated or encoded.
    #[error("making the RSA key: {0}")]
    Rsa(String),
    /// A key file exists already, or cannot be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl DkimKeys {
    /// Two fresh keys from the system's randomness.
    pub fn generate() -> Result<Self, DkimKeysError> {
        let rsa = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
            .map_err(|e| DkimKeysError::Rsa(e.to_string()))?;
        let rsa_pem = rsa
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| DkimKeysError::Rsa(e.to_string()))?;
        let rsa_public = rsa
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| DkimKeysError::Rsa(e.to_string()))?;
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        Ok(Self {
            rsa_pem: Zeroizing::new(rsa_pem.to_string()),
            ed25519_seed: Zeroizing::new(B64.encode(*seed)),
            rsa_public: B64.encode(rsa_public.as_bytes()),
            ed25519_public: B64.encode(leak_protocol::crypto::ed25519_public(&seed)),
        })
    }

    /// Writes the keys into `dir` (created if missing) as [`RSA_FILE`] and
    /// [`ED25519_FILE`], mode 0600, synced; never over an existing file.
    /// Returns their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), DkimKeysError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DkimKeysError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let rsa = dir.join(RSA_FILE);
        let ed25519 = dir.join(ED25519_FILE);
        for path in [&rsa, &ed25519] {
            if path.exists() {
                return Err(DkimKeysError::Io {
                    path: path.clone(),
                    source: std::io::ErrorKind::AlreadyExists.into(),
                });
            }
        }
        for (path, text) in [(&rsa, &self.rsa_pem), (&ed25519, &self.ed25519_seed)] {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            file.write_all(text.as_bytes()).map_err(io(path))?;
            file.write_all(b"\n").map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
        Ok((rsa, ed25519))
    }
}

/// The selector of the Ed25519 key beside RSA selector `selector`.
pub fn ed25519_selector(selector: &str) -> String {
    format!("{selector}-ed25519")
}

/// A TXT record's value as quoted strings of at most 255 bytes each (a
/// 2048-bit RSA key does not fit in one).
fn txt(value: &str) -> String {
    let parts: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    if parts.len() == 1 {
        parts.concat()
    } else {
        format!("( {} )", parts.join(" "))
    }
}

/// The DNS records an exit sending from `domain` needs, in zone-file form
/// with comments: DKIM for both keys, SPF (for `ips` when given, else the
/// domain's MX hosts), DMARC, and what the reverse DNS must say.
pub fn dns_records(domain: &str, selector: &str, keys: &DkimKeys, ips: &[IpAddr]) -> String {
    let domain = domain.trim().trim_end_matches('.');
    let spf = if ips.is_empty() {
        "v=spf1 mx -all".to_owned()
    } else {
        let mechanisms: Vec<String> = ips
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(ip) => format!("ip4:{ip}"),
                IpAddr::V6(ip) => format!("ip6:{ip}"),
            })
            .collect();
        format!("v=spf1 {} -all", mechanisms.join(" "))
    };
    let ed = ed25519_selector(selector);
    format!(
        "; DKIM, RSA-2048 (every large provider verifies it)\n\
         {selector}._domainkey.{domain}. TXT {rsa}\n\
         ; DKIM, Ed25519 (RFC 8463), the second signature\n\
         {ed}._domainkey.{domain}. TXT {ed25519}\n\
         ; SPF: only the exit's own mail server sends for {domain}\n\
         {domain}. TXT {spf}\n\
         ; DMARC: aligned DKIM and SPF, reports to postmaster@\n\
         _dmarc.{domain}. TXT {dmarc}\n\
         ; Reverse DNS: the PTR of each sending address must name a host whose A/AAAA\n\
         ; record is that address (forward-confirmed), and the mail server must greet\n\
         ; with that name (Postfix: myhostname). Gmail, Microsoft and Yahoo refuse\n\
         ; or spam-folder mail from addresses without it.\n",
        rsa = txt(&format!("v=DKIM1; k=rsa; p={}", keys.rsa_public)),
        ed25519 = txt(&format!("v=DKIM1; k=ed25519; p={}", keys.ed25519_public)),
        spf = txt(&spf),
        dmarc = txt(&format!(
            "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:postmaster@{domain}"
        )),
    )
}

/// The `[exit]` settings that sign with keys written by [`DkimKeys::write`].
pub fn config_lines(selector: &str, rsa: &Path, ed25519: &Path) -> String {
    format!(
        "[exit]\n\
         dkim_selector = {selector:?}\n\
         dkim_key_file = {rsa:?}\n\
         dkim_algorithm = \"rsa\"\n\
         dkim_ed25519_selector = {ed:?}\n\
         dkim_ed25519_key_file = {ed25519:?}\n",
        ed = ed25519_selector(selector),
        rsa = rsa.display().to_string(),
        ed25519 = ed25519.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lettre::message::dkim::{DkimSigningAlgorithm, DkimSigningKey};

    use super::*;

    /// The keys load as lettre's signing keys, the records carry their
    /// public halves (RSA's split in strings of at most 255 bytes), and
    /// files are never overwritten.
    #[test]
    fn keys_load_and_records_carry_them() {
        let keys = DkimKeys::generate().unwrap();
        assert!(DkimSigningKey::new(&keys.rsa_pem, DkimSigningAlgorithm::Rsa).is_ok());
        assert!(DkimSigningKey::new(&keys.ed25519_seed, DkimSigningAlgorithm::Ed25519).is_ok());
        let records = dns_records(
            "exit.example.",
            "s1",
            &keys,
            &["192.0.2.7".parse().unwrap()],
        );
        assert!(records.contains("s1._domainkey.exit.example. TXT ( \"v=DKIM1; k=rsa; p="));
        assert!(records.contains(&format!(
            "s1-ed25519._domainkey.exit.example. TXT \"v=DKIM1; k=ed25519; p={}\"",
            keys.ed25519_public
        )));
        assert!(records.contains("\"v=spf1 ip4:192.0.2.7 -all\""));
        assert!(records.contains("_dmarc.exit.example. TXT"));
        let rsa_record: String = records
            .lines()
            .find(|l| l.starts_with("s1._domainkey"))
            .unwrap()
            .split('"')
            .skip(1)
            .step_by(2)
            .inspect(|part| assert!(part.len() <= 255))
            .collect();
        assert_eq!(rsa_record, format!("v=DKIM1; k=rsa; p={}", keys.rsa_public));

        let dir = tempfile::tempdir().unwrap();
        let (rsa, ed) = keys.write(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        for path in [&rsa, &ed] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = DkimKeys::generate().unwrap();
        assert!(matches!(
            again.write(dir.path()),
            Err(DkimKeysError::Io { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&rsa).unwrap().trim(),
            keys.rsa_pem.trim()
        );
    }
}
