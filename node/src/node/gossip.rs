//! What arrives on the gossip mesh is checked before it is kept or passed on.

use std::sync::Arc;

use leak_protocol::NodeId;
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
        // Only from exits in the directory, signed by them.
        let listed = |node: &NodeId| {
            let directory = shared.directory.read().unwrap_or_else(|e| e.into_inner());
            directory
                .descriptors()
                .any(|d| d.node == *node && d.roles.exit)
        };
        return crate::exit::optout::offer(&message.data, listed, shared.exit().as_deref()).into();
    }
    Ignore
}
