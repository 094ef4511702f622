//! Directory fetches: after connecting to a node, and anti-entropy pulls.

use std::{sync::Arc, time::Duration};

use libp2p::PeerId;
use tokio::sync::watch;

use super::shared::{REQUEST_TIMEOUT, Shared};
use crate::{directory::Offer, safelog::Sensitive, wire};

/// Fetches a node's directory (after connecting to it, and from time to time
/// from a node at random: [`pull_directories`]) and keeps what verifies.
pub(super) async fn fetch_directory(peer: PeerId, shared: Arc<Shared>) {
    let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = shared.open_stream(peer, wire::DIRECTORY_PROTOCOL).await?;
        wire::request_directory(&mut stream, shared.roster.serial()).await
    })
    .await;
    match result {
        Ok(Ok(answer)) => {
            // The roster first: it decides which descriptors enter.
            if let Some(roster) = answer.roster
                && let Err(e) = shared.offer_roster(&roster)
            {
                tracing::debug!(error = %e, "refused a peer's roster");
            }
            let mut accepted = 0;
            for signed in answer.descriptors {
                if matches!(shared.offer(signed), Ok(Offer::Accepted)) {
                    accepted += 1;
                }
            }
            shared.refresh_addresses();
            tracing::debug!(accepted, "fetched a directory");
        }
        Ok(Err(e)) => tracing::debug!(error = %Sensitive::new(e), "directory fetch failed"),
        Err(_) => tracing::debug!("directory fetch timed out"),
    }
}

/// Anti-entropy: pulls the directory of one known node, chosen at random,
/// every so often: after 1 s, then twice as long each time up to the
/// maintenance tick. Without it a descriptor can be missed for half an
/// epoch (until its node publishes again): one that reaches the bootstrap
/// node while a newcomer's first directory fetch is in flight goes only to
/// the gossip mesh of that moment, and a directory request can fail.
pub(super) async fn pull_directories(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let period = shared.config.epochs.period_secs;
    let most = Duration::from_millis((period * 1000 / 4).clamp(1000, 30_000));
    let mut every = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        every = (every * 2).min(most);
        // An authority publishes by writing the configured file.
        if let Some(bytes) = shared.roster.changed_file()
            && let Err(e) = shared.offer_roster(&bytes)
        {
            tracing::warn!(error = %e, "directory.roster_file was not adopted");
        }
        let peers = shared.book.peers();
        if peers.is_empty() {
            continue;
        }
        let peer = {
            use rand::RngExt as _;
            peers[rand::rng().random_range(0..peers.len())]
        };
        fetch_directory(peer, shared.clone()).await;
    }
}
