//! The moderation policy: normalisation, categories, signatures, stamps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use leak_protocol::{
    NodeId, Recipient,
    payload::{MAX_REASON_LEN, MAX_RULE_LEN, MessageId},
    policy::{
        Category, Policy, PolicyError, SignedPolicy, StampError, Verdict, solve_stamp, verify_stamp,
    },
};

fn refused_as(policy: &Policy, text: &str) -> Option<Category> {
    policy.check_text(text).refusal().map(|r| r.category)
}

#[test]
fn benign_confessions_pass() {
    let policy = Policy::builtin();
    for text in [
        "I lied to you",
        "you're underpaid",
        "I have a crush on you",
        "you killed it at karaoke",
        "I broke your vase",
        "I think you're amazing",
    ] {
        assert_eq!(policy.check_text(text), Verdict::Accepted, "{text}");
    }
}

#[test]
fn refusals_name_rule_and_reason() {
    let policy = Policy::builtin();
    let v = policy.check_text("I will kill you");
    let r = v.refusal().expect("refused");
    assert_eq!(r.category, Category::Threat);
    assert!(r.rule.starts_with("threat."));
    assert!(r.rule.len() <= MAX_RULE_LEN && r.reason.len() <= MAX_REASON_LEN);
    assert!(!r.reason.to_lowercase().contains("kill you"));
}

#[test]
fn evasions_are_folded() {
    let policy = Policy::builtin();
    for text in [
        "I will k1ll you",
        "I will k i l l you",
        "I will k.i.l.l you",
        "I will kiiiiill you",
        "I will ki\u{200B}ll you",
        "I will \u{043A}ill you",
    ] {
        assert_eq!(refused_as(&policy, text), Some(Category::Threat), "{text}");
    }
}

#[test]
fn signatures() {
    let toml = leak_protocol::policy::BUILTIN_TOML;
    let a = [1u8; 32];
    let b = [2u8; 32];
    let pa = leak_protocol::crypto::ed25519_public(&a);
    let pb = leak_protocol::crypto::ed25519_public(&b);
    let mut signed = SignedPolicy::sign(toml, &a).unwrap();
    assert!(signed.verify(&[pa], 1).is_ok());
    assert!(matches!(
        signed.verify(&[pb], 1),
        Err(PolicyError::NotEnoughSignatures { .. })
    ));
    assert!(signed.verify(&[pa, pb], 2).is_err());
    signed.add_signature(&b).unwrap();
    let bytes = signed.to_bytes();
    let back = SignedPolicy::from_bytes(&bytes).unwrap();
    assert_eq!(
        back.verify(&[pa, pb], 2).unwrap().version(),
        Policy::builtin().version()
    );
}

#[test]
fn stamps() {
    let policy = Policy::builtin();
    let r = Recipient::parse("Alice+news@Example.com").unwrap();
    let h = policy.recipient_hash(&r);
    assert_eq!(
        h,
        policy.recipient_hash(&Recipient::parse("alice@example.com").unwrap())
    );
    let exit = NodeId([4; 32]);
    let id = MessageId([8; 16]);
    let s = solve_stamp(&h, &exit, 10, 10, &id);
    assert_eq!(verify_stamp(&s, &h, &exit, &id, 10, 10), Ok(()));
    assert!(matches!(
        verify_stamp(&s, &h, &exit, &id, 10, 12),
        Err(StampError::WrongEpoch { .. })
    ));
}
