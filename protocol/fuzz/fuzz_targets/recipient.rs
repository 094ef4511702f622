//! `Recipient::parse` must never panic, and an accepted address must be
//! safe to put in an SMTP command or a mail header: no CR, LF, other control
//! characters or whitespace, an ASCII domain, and RFC 5321 lengths.

#![no_main]

use leak_protocol::{
    Recipient,
    address::{MAX_ADDRESS_LEN, MAX_DOMAIN_LEN},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(recipient) = Recipient::parse(text) else {
        return;
    };
    let address = recipient.as_str();
    assert_eq!(address, text, "the address is kept as given");
    assert!(!address.contains(['\r', '\n']), "CR or LF accepted");
    assert!(
        !address.chars().any(|c| c.is_control() || c.is_whitespace()),
        "control character or whitespace accepted"
    );
    assert!(address.len() <= MAX_ADDRESS_LEN);

    let domain = recipient.ascii_domain();
    assert!(domain.is_ascii(), "non-ASCII ascii_domain");
    assert!(!domain.is_empty() && domain.len() <= MAX_DOMAIN_LEN);
    assert!(domain.contains('.'), "domain without a dot");
    assert!(
        !domain.chars().any(|c| c.is_ascii_control() || c == ' '),
        "control character in ascii_domain"
    );

    let local = recipient.local_part();
    assert!(!local.is_empty() && !local.contains('@'));
    assert_eq!(
        recipient.to_ascii_address(),
        format!("{local}@{domain}"),
        "ASCII address"
    );

    // Parsing is idempotent.
    let again = Recipient::parse(address).expect("an accepted address parses again");
    assert!(again == recipient, "re-parse changed the recipient");
});
