//! What arrives on the gossip mesh is checked before it is kept or passed on.

use std::sync::Arc;

use libp2p::gossipsub;

use super::shared::Shared;
use crate::{
    net::{OPT_OUT_TOPIC, POLICY_TOPIC},
    policy::Offered,
};

/// A policy or opt-out message from the gossip mesh: checked, kept, and
/// passed on only if valid.
pub(super) fn offer_gossip(
    shared: &Arc<Shared>,
    message: &gossipsub::Message,
) -> gossipsub::MessageAcceptance {
    use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
    if message.topic == gossipsub::IdentTopic::new(POLICY_TOPIC).hash() {
        return match shared.policy.offer(&message.data) {
            Offered::Adopted(_) => {
                shared.republish.notify_one();
                Accept
            }
            Offered::NotNewer => Accept,
            Offered::Invalid(e) => {
                tracing::debug!(error = %e, "refused a policy");
                Reject
            }
        };
    }
    if message.topic == gossipsub::IdentTopic::new(OPT_OUT_TOPIC).hash() {
        let Some(records) = leak_protocol::policy::optout::decode_batch(&message.data) else {
            return Reject;
        };
        // Only from exits in the directory, signed by them.
        let valid = {
            let directory = shared.directory.read().unwrap_or_else(|e| e.into_inner());
            records.iter().all(|r| {
                r.verify()
                    && directory
                        .descriptors()
                        .any(|d| d.node == r.exit && d.roles.exit)
            })
        };
        if !valid {
            return Reject;
        }
        if let Some(exit) = shared.exit()
            && let Err(e) = exit.take_opt_outs(&records)
        {
            tracing::error!(error = %e, "cannot keep opt-outs from other exits");
            return Ignore;
        }
        return Accept;
    }
    Ignore
}
