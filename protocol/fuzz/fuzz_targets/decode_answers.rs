//! The answer payloads must never panic on any input: `Fetch::decode`,
//! `FetchReply::decode` (whatever they accept round-trips canonically) and
//! `open_answer` under a fixed key (whatever it opens is a valid answer).

#![no_main]

use leak_protocol::answers::{Fetch, FetchReply, open_answer, validate_answer_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(fetch) = Fetch::decode(data) {
        let encoded = fetch.encode().expect("a decoded fetch encodes");
        assert_eq!(encoded, data, "fetch encoding is not canonical");
    }
    if let Ok(reply) = FetchReply::decode(data) {
        let encoded = reply.encode().expect("a decoded reply is valid, so it encodes");
        assert_eq!(
            FetchReply::decode(&encoded).expect("an encoded reply decodes"),
            reply
        );
    }
    if let Ok(answer) = open_answer(&[7; 32], data) {
        assert!(validate_answer_text(&answer.text).is_ok());
    }
});
