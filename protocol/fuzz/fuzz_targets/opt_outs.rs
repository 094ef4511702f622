//! Opt-out batches from other exits: decoding never panics, and a batch
//! that decodes re-encodes to the bytes it came from (one encoding per
//! batch, so a record cannot be smuggled in two shapes).

#![no_main]

use leak_protocol::policy::optout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(records) = optout::decode_batch(data) else {
        return;
    };
    assert!(records.len() <= optout::MAX_OPT_OUTS);
    for record in &records {
        let _ = record.verify();
    }
    assert_eq!(optout::encode_batch(&records).as_deref(), Some(data));
});
