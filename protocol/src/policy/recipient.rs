//! Who a recipient is, for caps and opt-outs: one person's addresses
//! normalised to one string before they are hashed
//! ([`Policy::recipient_hash`](super::Policy::recipient_hash)).
//!
//! A sender who could write `a.l.i.c.e@gmail.com`, `alice+1@gmail.com` and
//! `alice@googlemail.com` to reach one mailbox would get a cap's worth of
//! leaks for each spelling, and an opt-out made from one would not cover
//! the others. Normalisation undoes the spellings that a provider defines
//! to reach the same mailbox, and nothing else: two addresses that
//! normalise alike must belong to one person, or one person's opt-out
//! would silence another's mail.
//!
//! The policy names the scheme (`[limits] address_normalization`), so that
//! every exit and every client of a policy version computes the same
//! hash (a leak's stamp is bound to it). [`Normalization::Basic`] is what
//! policies before the field used; exits look opt-outs and counts up
//! under its hash too, so nothing recorded before a policy adopts
//! [`Normalization::Providers`] is lost.

use crate::address::Recipient;

/// How an address is normalised before it is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Normalization {
    /// Scheme 1: the local part in lower case with a `+tag` removed, the
    /// domain in lower-case ASCII (Punycode).
    Basic,
    /// Scheme 2: scheme 1, then what each large provider defines (see
    /// [`normalize`]).
    Providers,
}

impl Normalization {
    /// The scheme a policy document names by number (1 or 2).
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::Basic),
            2 => Some(Self::Providers),
            _ => None,
        }
    }

    /// The scheme's number in a policy document.
    pub fn number(self) -> u8 {
        match self {
            Self::Basic => 1,
            Self::Providers => 2,
        }
    }
}

/// Gmail: dots in the local part are ignored, and `googlemail.com` is the
/// same service (Google's help: "Gmail doesn't recognize dots as
/// characters within usernames"; "googlemail.com" addresses reach the same
/// inbox).
const GMAIL: &[&str] = &["gmail.com", "googlemail.com"];

/// Yahoo's disposable addresses are `basename-keyword@yahoo.…`: everything
/// after the first `-` of a Yahoo local part is a keyword of one account's
/// base name (a Yahoo username itself has no `-`).
const YAHOO: &[&str] = &[
    "yahoo.com",
    "ymail.com",
    "rocketmail.com",
    "yahoo.fr",
    "yahoo.co.uk",
    "yahoo.de",
    "yahoo.es",
    "yahoo.it",
    "yahoo.ca",
    "yahoo.com.br",
    "yahoo.co.jp",
    "yahoo.co.in",
    "yahoo.com.au",
];

/// Fastmail delivers `anything@user.fastmail.com` to `user@fastmail.com`
/// (subdomain addressing), for these domains.
const FASTMAIL: &[&str] = &["fastmail.com", "fastmail.fm"];

/// `address` normalised under `scheme`, as `local@domain`.
///
/// Scheme 2 adds to scheme 1:
/// - Gmail (`gmail.com`, `googlemail.com`): dots removed from the local
///   part, the domain `gmail.com`;
/// - Yahoo (its mail domains): a `-keyword` removed from the local part;
/// - Fastmail: `anything@user.fastmail.com` becomes `user@fastmail.com`.
///
/// A `+tag` is removed at every domain under both schemes: the providers
/// most addresses belong to (Gmail, Outlook, iCloud, Proton, Fastmail)
/// and the usual server set-ups (Postfix's and Exchange's plus addressing)
/// define it, and treating `a+b` as `a` where it is not defined only
/// makes a cap stricter.
pub fn normalize(recipient: &Recipient, scheme: Normalization) -> String {
    let local = recipient.local_part();
    let local = local.split_once('+').map_or(local, |(l, _)| l);
    let mut local = local.to_lowercase();
    let mut domain = recipient.ascii_domain().to_ascii_lowercase();
    if scheme == Normalization::Providers {
        if GMAIL.contains(&domain.as_str()) {
            local.retain(|c| c != '.');
            domain = GMAIL[0].to_owned();
        } else if YAHOO.contains(&domain.as_str()) {
            if let Some((base, _)) = local.split_once('-') {
                local = base.to_owned();
            }
        } else if let Some((user, parent)) = domain.split_once('.')
            && FASTMAIL.contains(&parent)
            && !user.is_empty()
        {
            local = user.to_owned();
            domain = parent.to_owned();
        }
    }
    let mut out = local;
    out.push('@');
    out.push_str(&domain);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(address: &str, scheme: Normalization) -> String {
        normalize(&Recipient::parse(address).unwrap(), scheme)
    }

    #[test]
    fn basic_lowercases_and_drops_plus_tags_everywhere() {
        let b = Normalization::Basic;
        assert_eq!(n("Alice+news@Example.COM", b), "alice@example.com");
        assert_eq!(n("a.l.i.c.e@gmail.com", b), "a.l.i.c.e@gmail.com");
        assert_eq!(n("josé@exämple.de", b), "josé@xn--exmple-cua.de");
    }

    #[test]
    fn providers_undo_what_each_provider_defines() {
        let p = Normalization::Providers;
        for gmail in [
            "alice@gmail.com",
            "a.l.i.c.e@gmail.com",
            "A.Lice+leak@GoogleMail.com",
            "alice+x+y@gmail.com",
        ] {
            assert_eq!(n(gmail, p), "alice@gmail.com", "{gmail}");
        }
        assert_eq!(n("bob-shop@yahoo.fr", p), "bob@yahoo.fr");
        assert_eq!(n("bob-a-b@ymail.com", p), "bob@ymail.com");
        assert_eq!(n("anything@carol.fastmail.com", p), "carol@fastmail.com");
        assert_eq!(n("carol+x@fastmail.com", p), "carol@fastmail.com");
    }

    #[test]
    fn providers_leave_other_domains_alone() {
        let p = Normalization::Providers;
        // Dots and hyphens mean something elsewhere.
        assert_eq!(n("a.lice@outlook.com", p), "a.lice@outlook.com");
        assert_eq!(n("jean-paul@example.fr", p), "jean-paul@example.fr");
        assert_eq!(n("a.lice@notgmail.com", p), "a.lice@notgmail.com");
        assert_eq!(
            n("a.lice@gmail.com.evil.org", p),
            "a.lice@gmail.com.evil.org"
        );
        // Only a subdomain of Fastmail's own domains.
        assert_eq!(n("x@carol.fastmail.org", p), "x@carol.fastmail.org");
        assert_eq!(n("x@a.b.fastmail.com", p), "x@a.b.fastmail.com");
    }

    #[test]
    fn scheme_numbers_round_trip() {
        for scheme in [Normalization::Basic, Normalization::Providers] {
            assert_eq!(Normalization::from_number(scheme.number()), Some(scheme));
        }
        assert_eq!(Normalization::from_number(0), None);
        assert_eq!(Normalization::from_number(3), None);
    }
}
