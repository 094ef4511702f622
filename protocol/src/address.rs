//! Recipient addresses: what an exit will put in `RCPT TO`.
//!
//! The rules are stricter than RFC 5322 allows and exactly as strict as a
//! mail relay needs: a dot-atom local part (ASCII `atext` or UTF-8 per
//! RFC 6531), one `@`, and a DNS domain (IDN accepted, checked and converted
//! by UTS #46). No quoted local parts, no comments, no IP literals, no
//! whitespace or control characters anywhere: so no header or SMTP command
//! injection can ride in on an address.

use core::fmt;

/// RFC 5321 §4.5.3.1.1: at most 64 octets of local part.
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// RFC 5321 §4.5.3.1.2: at most 255 octets of domain (253 in DNS text form).
pub const MAX_DOMAIN_LEN: usize = 253;
/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its angle brackets.
pub const MAX_ADDRESS_LEN: usize = 254;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The address is empty.
    #[error("the address is empty")]
    Empty,
    /// Longer than [`MAX_ADDRESS_LEN`] octets.
    #[error("the address is {0} bytes; at most {MAX_ADDRESS_LEN} are allowed")]
    TooLong(usize),
    /// A control character, CR, LF or whitespace.
    #[error("the address contains whitespace or a control character")]
    ControlOrSpace,
    /// Not exactly one `@` with something on each side.
    #[error("the address must have the form local-part@domain")]
    MissingAt,
    /// Longer than [`MAX_LOCAL_PART_LEN`] octets before the `@`.
    #[error("the part before @ is {0} bytes; at most {MAX_LOCAL_PART_LEN} are allowed")]
    LocalPartTooLong(usize),
    /// The local part is not a dot-atom.
    #[error(
        "the part before @ may not contain {0:?}, start or end with a dot, or have two dots in a row"
    )]
    InvalidLocalPart(char),
    /// The domain is not a valid (internationalised) DNS name.
    #[error("the domain is not a valid domain name")]
    InvalidDomain,
    /// The domain is an IP literal or has no dot.
    #[error("the domain must be a fully qualified name, not an IP address")]
    NotAHostname,
}

/// A validated recipient address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Recipient {
    address: String,
    ascii_domain: String,
}

impl Recipient {
    /// Validates `address`.
    pub fn parse(address: &str) -> Result<Self, AddressError> {
        if address.is_empty() {
            return Err(AddressError::Empty);
        }
        if address.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong(address.len()));
        }
        if address
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\u{feff}')
        {
            return Err(AddressError::ControlOrSpace);
        }
        let (local, domain) = address.rsplit_once('@').ok_or(AddressError::MissingAt)?;
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::MissingAt);
        }
        check_local_part(local)?;
        let ascii_domain = check_domain(domain)?;
        // The Punycode form is what SMTP carries: it must fit the limit too.
        let ascii_len = local.len() + 1 + ascii_domain.len();
        if ascii_len > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong(ascii_len));
        }
        Ok(Self {
            address: address.to_owned(),
            ascii_domain,
        })
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The local part (before the `@`).
    pub fn local_part(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map_or(self.address.as_str(), |(l, _)| l)
    }

    /// The domain in its ASCII (Punycode, lower-case) form.
    pub fn ascii_domain(&self) -> &str {
        &self.ascii_domain
    }

    /// The address with its domain in ASCII form: what SMTP should be given.
    pub fn to_ascii_address(&self) -> String {
        format!("{}@{}", self.local_part(), self.ascii_domain)
    }
}

/// Redacted: a recipient must never reach a log line by accident.
impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Recipient([redacted])")
    }
}

fn check_local_part(local: &str) -> Result<(), AddressError> {
    if local.len() > MAX_LOCAL_PART_LEN {
        return Err(AddressError::LocalPartTooLong(local.len()));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(AddressError::InvalidLocalPart('.'));
    }
    // RFC 5322 atext, plus any non-ASCII character (RFC 6531 utf8-non-ascii).
    const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    match local
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(c) || !c.is_ascii()))
    {
        Some(c) => Err(AddressError::InvalidLocalPart(c)),
        None => Ok(()),
    }
}

fn check_domain(domain: &str) -> Result<String, AddressError> {
    if domain.starts_with('[') {
        return Err(AddressError::NotAHostname);
    }
    let ascii = idna::domain_to_ascii_strict(domain).map_err(|_| AddressError::InvalidDomain)?;
    if ascii.is_empty() || ascii.len() > MAX_DOMAIN_LEN {
        return Err(AddressError::InvalidDomain);
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(AddressError::NotAHostname);
    }
    // A numeric top-level label means an IP address in disguise.
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(AddressError::NotAHostname);
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_international_addresses() {
        for a in [
            "alice@example.com",
            "first.last+tag@mail.example.org",
            "o'brien@example.ie",
            "josé@exämple.de",
            "用户@例子.广告",
            "x@a.co",
        ] {
            let r = Recipient::parse(a).unwrap_or_else(|e| panic!("{a}: {e}"));
            assert_eq!(r.as_str(), a);
            assert!(r.ascii_domain().is_ascii());
        }
        assert_eq!(
            Recipient::parse("josé@exämple.de").unwrap().ascii_domain(),
            "xn--exmple-cua.de"
        );
    }

    #[test]
    fn refuses_injection_and_malformed_addresses() {
        let cases: &[(&str, AddressError)] = &[
            ("", AddressError::Empty),
            ("a@b.com\r\nBcc: x@y.com", AddressError::ControlOrSpace),
            ("a@b.com\n", AddressError::ControlOrSpace),
            ("a b@c.com", AddressError::ControlOrSpace),
            ("a\0@c.com", AddressError::ControlOrSpace),
            ("noatsign.com", AddressError::MissingAt),
            ("@example.com", AddressError::MissingAt),
            ("a@", AddressError::MissingAt),
            (".a@example.com", AddressError::InvalidLocalPart('.')),
            ("a..b@example.com", AddressError::InvalidLocalPart('.')),
            ("a<b@example.com", AddressError::InvalidLocalPart('<')),
            ("\"q\"@example.com", AddressError::InvalidLocalPart('"')),
            ("a@b@example.com", AddressError::InvalidLocalPart('@')),
            ("a@[127.0.0.1]", AddressError::NotAHostname),
            ("a@127.0.0.1", AddressError::NotAHostname),
            ("a@localhost", AddressError::NotAHostname),
            ("a@-bad-.com", AddressError::InvalidDomain),
            ("a@exa_mple.com", AddressError::InvalidDomain),
        ];
        for (a, want) in cases {
            assert_eq!(Recipient::parse(a).as_ref().err(), Some(want), "{a:?}");
        }
    }

    #[test]
    fn enforces_rfc5321_lengths() {
        let local = "a".repeat(64);
        assert!(Recipient::parse(&format!("{local}@example.com")).is_ok());
        let local = "a".repeat(65);
        assert_eq!(
            Recipient::parse(&format!("{local}@example.com")),
            Err(AddressError::LocalPartTooLong(65))
        );
        let label = "b".repeat(63);
        let long = format!("a@{label}.{label}.{label}.{label}.com");
        assert!(matches!(
            Recipient::parse(&long),
            Err(AddressError::TooLong(_))
        ));
        let label64 = "b".repeat(64);
        assert_eq!(
            Recipient::parse(&format!("a@{label64}.com")),
            Err(AddressError::InvalidDomain)
        );
    }

    /// An internationalised domain within the limit in UTF-8 can exceed it
    /// once converted to Punycode; the ASCII form is what SMTP carries.
    #[test]
    fn ascii_form_must_fit_the_limit_too() {
        let label = format!("{}é", "a".repeat(55)); // 57 bytes; 62 as Punycode
        let domain = format!("{label}.{label}.{label}.com");
        let address = format!("{}@{domain}", "b".repeat(64));
        assert_eq!(address.len(), 242);
        assert_eq!(Recipient::parse(&address), Err(AddressError::TooLong(260)));
    }

    #[test]
    fn debug_is_redacted() {
        let r = Recipient::parse("alice@example.com").unwrap();
        assert!(!format!("{r:?}").contains("alice"));
    }
}
