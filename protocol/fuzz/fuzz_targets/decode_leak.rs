//! `Leak::decode` must never panic, and whatever it accepts must encode and
//! decode back to the same value, with a canonical encoding.

#![no_main]

use leak_protocol::Leak;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(leak) = Leak::decode(data) else {
        return;
    };
    let encoded = leak
        .encode()
        .expect("a decoded leak is valid, so it encodes");
    let again = Leak::decode(&encoded).expect("an encoded leak decodes");
    assert!(again == leak, "leak round trip changed the value");
    let reencoded = again.encode().expect("a decoded leak encodes");
    assert_eq!(encoded, reencoded, "leak encoding is not canonical");
});
