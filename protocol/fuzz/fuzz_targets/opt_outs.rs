//! Opt-out batches from other exits: decoding never panics, and a batch
//! that decodes re-encodes to a batch that decodes to the same records.
//! (Not to the same bytes: postcard takes some overlong varints, so a
//! record has more than one encoding. Signatures cover the values, not the
//! bytes, so that changes no record's meaning.)

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
    let again = optout::encode_batch(&records).expect("a decoded batch re-encodes");
    assert_eq!(optout::decode_batch(&again).as_ref(), Some(&records));
});
