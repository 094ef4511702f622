//! What arrives on the gossip mesh is checked before it is kept or passed on.

use std::sync::Arc;

use libp2p::gossipsub;

use super::shared::Shared;
use crate::{net::POLICY_TOPIC, policy::Offered};

/// A policy from the gossip mesh: checked, kept, and passed on only if
/// valid.
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
    Ignore
}
