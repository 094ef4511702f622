//! Opt-outs: a recipient's one-click opt-out at this exit, signed and
//! published to the federation; other exits' opt-outs heard on the gossip
//! mesh, checked and kept; this exit's own, republished for newcomers.
//! Abuse reports come through the same endpoint.
//!
//! The node only carries the bytes: [`offer`] decides what the mesh does
//! with a batch (every node checks it, an exit also keeps it), and
//! [`Exit::own_opt_outs`] gives what to publish to a new subscriber.

use std::sync::Arc;

use leak_protocol::{
    MessageId, NodeId,
    policy::optout::{self, OptOut},
};

use super::{Exit, ExitError, email::Link, provider::Provider};

/// What the gossip mesh should do with an opt-out batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gossip {
    /// Valid: pass it on.
    Accept,
    /// Invalid (does not decode, a bad signature, not from a listed exit):
    /// penalise its sender.
    Reject,
    /// Valid but not kept here (this exit's storage failed): do not pass
    /// it on, do not penalise.
    Ignore,
}

impl From<Gossip> for libp2p::gossipsub::MessageAcceptance {
    fn from(gossip: Gossip) -> Self {
        match gossip {
            Gossip::Accept => Self::Accept,
            Gossip::Reject => Self::Reject,
            Gossip::Ignore => Self::Ignore,
        }
    }
}

/// Checks an opt-out batch heard on the mesh: every record signed by an
/// exit the directory lists (`is_listed_exit`); kept by `exit` when this
/// node is one.
pub fn offer(
    batch: &[u8],
    is_listed_exit: impl Fn(&NodeId) -> bool,
    exit: Option<&Exit>,
) -> Gossip {
    let Some(records) = optout::decode_batch(batch) else {
        return Gossip::Reject;
    };
    if !records
        .iter()
        .all(|r| r.verify() && is_listed_exit(&r.exit))
    {
        return Gossip::Reject;
    }
    if let Some(exit) = exit
        && let Err(e) = exit.take_opt_outs(&records)
    {
        tracing::error!(error = %e, "cannot keep opt-outs from other exits");
        return Gossip::Ignore;
    }
    Gossip::Accept
}

impl Exit {
    /// Keeps opt-outs other exits verified (already checked by [`offer`]).
    fn take_opt_outs(&self, records: &[OptOut]) -> Result<usize, ExitError> {
        let records: Vec<_> = records
            .iter()
            .map(|r| (r.recipient, r.at.saturating_mul(1000), r.exit.0))
            .collect();
        self.store.opt_out(&records)
    }

    /// This exit's own opt-outs, signed, in batches (to republish them for
    /// exits that joined since).
    pub fn own_opt_outs(&self) -> Result<Vec<Vec<u8>>, ExitError> {
        let own = self.store.opt_outs_by(&self.node_id.0)?;
        Ok(own
            .chunks(optout::MAX_OPT_OUTS)
            .filter_map(|chunk| {
                let records: Vec<OptOut> = chunk
                    .iter()
                    .map(|(recipient, at_ms)| OptOut::sign(&self.seed, *recipient, at_ms / 1000))
                    .collect();
                optout::encode_batch(&records)
            })
            .collect())
    }

    /// Opts out the recipient a token was made for. `Ok(false)`: the token
    /// is not valid.
    pub async fn opt_out_with_token(self: &Arc<Self>, token: &str) -> Result<bool, ExitError> {
        let Some((_, recipient)) = self.composer.tokens.check(Link::OptOut, token) else {
            self.metrics.exit_bad_tokens.inc();
            return Ok(false);
        };
        let this = self.clone();
        let now = self.now_ms();
        let own = self.node_id.0;
        let new = tokio::task::spawn_blocking(move || this.store.opt_out(&[(recipient, now, own)]))
            .await??;
        if new > 0 {
            self.metrics.exit_opt_outs.inc();
            // Every exit refuses this recipient from now on.
            let record = OptOut::sign(&self.seed, recipient, now / 1000);
            if let Some(batch) = optout::encode_batch(&[record]) {
                (self.publish_opt_outs)(batch);
            }
        }
        Ok(true)
    }

    /// Records an abuse report for the leak a token was made for.
    pub async fn report_with_token(self: &Arc<Self>, token: &str) -> Result<bool, ExitError> {
        let Some((id, _, provider)) = self.composer.tokens.check_report(token) else {
            self.metrics.exit_bad_tokens.inc();
            return Ok(false);
        };
        self.complaint(id, provider).await?;
        Ok(true)
    }

    /// A complaint about the leak the exit refers to as `reference` (a
    /// report link, a feedback-loop report), delivered at `provider`:
    /// counted once per leak, however often it comes.
    pub(super) async fn complaint(
        self: &Arc<Self>,
        reference: MessageId,
        provider: Provider,
    ) -> Result<(), ExitError> {
        let this = self.clone();
        let now = self.now_ms();
        tokio::task::spawn_blocking(move || {
            let new = this.store.report(&reference, now)?;
            if new {
                this.metrics.exit_abuse_reports.inc();
                this.complained(provider);
            }
            Ok::<_, ExitError>(())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn batch(seed: &[u8; 32], recipient: u8) -> Vec<u8> {
        optout::encode_batch(&[OptOut::sign(seed, [recipient; 32], 1_700_000_000)]).unwrap()
    }

    #[test]
    fn only_signed_batches_from_listed_exits_pass() {
        let seed = [7u8; 32];
        let exit_id = NodeId(leak_protocol::crypto::ed25519_public(&seed));
        let listed = |n: &NodeId| *n == exit_id;
        assert_eq!(offer(&batch(&seed, 1), listed, None), Gossip::Accept);
        assert_eq!(offer(&batch(&seed, 1), |_| false, None), Gossip::Reject);
        assert_eq!(offer(b"not a batch", listed, None), Gossip::Reject);
        // A record re-signed by someone else under the listed exit's name.
        let mut forged = optout::decode_batch(&batch(&[9u8; 32], 1)).unwrap();
        forged[0].exit = exit_id;
        let forged = optout::encode_batch(&forged).unwrap();
        assert_eq!(offer(&forged, listed, None), Gossip::Reject);
    }
}
