//! The exit's own mail server: the Postfix settings `leak-node
//! postfix-config` prints. Postfix sends the exit's emails straight to
//! each recipient's MX (DANE-authenticated TLS where the domain publishes
//! TLSA records, opportunistic TLS elsewhere), sends the delivery status
//! notifications the exit asks for to each leak's return path, and hands
//! every message for the exit's domain to the exit over LMTP on loopback.
//! Pure: the text is made from the settings given.

use std::net::SocketAddr;

/// What the operator needs: `main.cf` lines and the exit's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostfixConfig {
    /// Lines for `/etc/postfix/main.cf` (Postfix 3.7 or later).
    pub main_cf: String,
    /// The `[exit]` settings that go with them.
    pub exit_settings: String,
}

/// The settings for an exit sending from `domain`, whose mail server is
/// `hostname` (the name its address's reverse DNS gives), taking inbound
/// mail on `inbound`, with From local part `from` and abuse local part
/// `abuse`.
pub fn render(
    domain: &str,
    hostname: &str,
    inbound: SocketAddr,
    from: &str,
    abuse: &str,
) -> PostfixConfig {
    let domain_re = regex_escape(domain);
    let locals: Vec<String> = ["postmaster", "abuse", from, abuse]
        .iter()
        .map(|l| regex_escape(&l.to_ascii_lowercase()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let locals = locals.join("|");
    let max_message = super::inbound::lmtp::MAX_MESSAGE;
    let main_cf = format!(
        "# The exit's own mail server (leak-node postfix-config). Postfix 3.7 or
# later: append to /etc/postfix/main.cf (a later line wins), then
# `postfix reload`.
myhostname = {hostname}
mydomain = {domain}
myorigin = $mydomain
mydestination = localhost
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no

# Outbound: straight to each recipient's MX. TLS is authenticated by DANE
# where the domain publishes TLSA records (this needs a DNSSEC-validating
# resolver, such as unbound on 127.0.0.1), opportunistic elsewhere.
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane
smtp_tls_loglevel = 1
smtp_tls_session_cache_database = btree:${{data_directory}}/smtp_scache
smtp_helo_name = $myhostname
# The exit paces itself per provider; Postfix keeps few connections open
# to one destination, as new senders should.
smtp_destination_concurrency_limit = 5

# Delivery status notifications: the exit asks for them (NOTIFY, ENVID,
# RET=HDRS) and they come back to each leak's own return path
# (b-TOKEN@{domain}). A deferred email gets a delay notice after 4 h and is
# given up after 5 days, as the exit's own queue does.
delay_warning_time = 4h
bounce_queue_lifetime = 5d
maximal_queue_lifetime = 5d
# The most the exit takes (256 KiB): larger mail is refused during the SMTP
# session, never accepted and then bounced.
message_size_limit = {max_message}

# Inbound: mail for {domain} (notifications, feedback-loop reports,
# postmaster@, abuse@, answers to the From address, and recipients'
# answers to a conversation's Reply-To address a-TOKEN@{domain}) goes to
# the exit over LMTP. Any other local part is refused during the SMTP session, so no
# bounce ever goes to a forged sender. ($$ is a literal $ in main.cf.)
relay_domains = {domain}
relay_recipient_maps = regexp:{{{{/^({locals}|[ab]-[0-9a-f]+)@{domain_re}$$/ OK}}}}
transport_maps = inline:{{{domain}=lmtp:inet:{inbound}}}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
# TLS for the mail that comes in (a certificate for {hostname}):
smtpd_tls_security_level = may
# smtpd_tls_chain_files = /etc/letsencrypt/live/{hostname}/privkey.pem,
#     /etc/letsencrypt/live/{hostname}/fullchain.pem
# A smarthost instead of direct delivery (it must support DSN, or every
# receipt says Accepted):
# relayhost = [smarthost.example]:587
"
    );
    let exit_settings = format!(
        "# In the exit's config file ([exit]):
transport = \"smtp\"
smtp_url = \"smtp://127.0.0.1:25\"
inbound_listen = \"{inbound}\"
"
    );
    PostfixConfig {
        main_cf,
        exit_settings,
    }
}

/// `text` with the characters special in a POSIX regular expression
/// escaped.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if ".[]()*+?{}|^$\\/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_goes_to_the_exit_and_only_its_addresses_are_taken() {
        let config = render(
            "exit.example",
            "mail.exit.example",
            "127.0.0.1:2424".parse().unwrap_or_else(|_| unreachable!()),
            "leak",
            "abuse",
        );
        let cf = &config.main_cf;
        assert!(cf.contains("transport_maps = inline:{exit.example=lmtp:inet:127.0.0.1:2424}"));
        assert!(cf.contains(
            r"relay_recipient_maps = regexp:{{/^(abuse|leak|postmaster|[ab]-[0-9a-f]+)@exit\.example$$/ OK}}"
        ));
        assert!(cf.contains("smtp_tls_security_level = dane"));
        assert!(cf.contains("myhostname = mail.exit.example"));
        assert!(
            config
                .exit_settings
                .contains("inbound_listen = \"127.0.0.1:2424\"")
        );
        assert_eq!(regex_escape("a.b+c"), r"a\.b\+c");
    }
}
