//! `Receipt::decode` must never panic, and whatever it accepts must encode
//! and decode back to the same value, with a canonical encoding.

#![no_main]

use leak_protocol::Receipt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(receipt) = Receipt::decode(data) else {
        return;
    };
    let encoded = receipt
        .encode()
        .expect("a decoded receipt is valid, so it encodes");
    let again = Receipt::decode(&encoded).expect("an encoded receipt decodes");
    assert_eq!(again, receipt, "receipt round trip changed the value");
    let reencoded = again.encode().expect("a decoded receipt encodes");
    assert_eq!(encoded, reencoded, "receipt encoding is not canonical");
});
