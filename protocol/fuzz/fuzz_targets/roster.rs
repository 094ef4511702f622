//! Signed rosters from the network: parsing and verification never panic;
//! a roster that verifies re-encodes to the text it was signed over, and
//! a directory adopts it (or refuses it as not newer) without panicking.

#![no_main]

use leak_protocol::{
    directory::Directory,
    roster::{Roster, SignedRoster},
};
use libfuzzer_sys::fuzz_target;

/// The public key of the seed [7; 32], trusted here: inputs signed with it
/// (the seeds) reach the text checks.
fn trusted() -> [u8; 32] {
    leak_protocol::crypto::ed25519_public(&[7; 32])
}

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = SignedRoster::from_bytes(data) else {
        return;
    };
    assert_eq!(signed.to_bytes(), data);
    // The text alone, whoever signed it.
    if let Ok(roster) = signed.roster_unverified() {
        assert_eq!(Roster::from_toml(&roster.to_toml()).expect("re-parses"), roster);
    }
    if let Ok(roster) = signed.verify(&[trusted()], 1, 1_790_000_000, u64::MAX) {
        let mut directory = Directory::new(3600, 300, 100);
        let _ = directory.adopt_roster(roster.clone());
        assert_eq!(directory.roster(), Some(&roster));
    }
});
