//! Signed node descriptors from the network: parsing and verification never
//! panic; a descriptor that verifies is consistent, and its re-encoding
//! parses and verifies to the same descriptor. (Not necessarily the same
//! bytes: postcard takes some overlong varints; the signature covers the
//! body's bytes, which travel as they came.)

#![no_main]

use leak_protocol::directory::{Freshness, SignedDescriptor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = SignedDescriptor::from_bytes(data) else {
        return;
    };
    let freshness = Freshness {
        now: 1_790_000_000,
        max_age_secs: u64::MAX,
        max_clock_skew_secs: u64::MAX,
    };
    if let Ok(descriptor) = signed.verify(freshness) {
        assert!(descriptor.check_consistency().is_ok());
        let again = SignedDescriptor::from_bytes(&signed.to_bytes()).expect("re-parses");
        assert_eq!(again.verify(freshness).expect("still verifies"), descriptor);
    }
});
