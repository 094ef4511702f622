//! Inbound streams: packets into the fair queue; directory and mailbox
//! requests, bounded in number and time.

use std::sync::Arc;

use leak_protocol::sphinx::MailboxId;
use libp2p::PeerId;
use tokio::sync::{Semaphore, watch};

use super::shared::{REQUEST_TIMEOUT, Shared};
use crate::{net, queue::Pushed, relay::DropReason, safelog::Sensitive, wire};

/// Most concurrent inbound packet streams per peer.
const MAX_PACKET_STREAMS_PER_PEER: usize = 2;
/// Most concurrent directory and mailbox requests being served.
const MAX_CONCURRENT_REQUESTS: usize = 32;

pub(super) async fn accept_packets(
    mut incoming: net::Incoming,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (peer, stream) = tokio::select! {
            _ = shutdown.changed() => return,
            next = incoming.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        {
            let mut streams = shared
                .inbound_streams
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let count = streams.entry(peer).or_insert(0);
            if *count >= MAX_PACKET_STREAMS_PER_PEER {
                shared.drop_packet(DropReason::TooManyStreams);
                continue;
            }
            *count += 1;
        }
        tokio::spawn(read_packets(peer, stream, shared.clone()));
    }
}

async fn read_packets(peer: PeerId, mut stream: libp2p::Stream, shared: Arc<Shared>) {
    loop {
        match wire::read_packet(&mut stream).await {
            Ok(Some(packet)) => {
                shared.metrics.packets_received.inc();
                shared.count_received(&peer);
                match shared.inbound.push(peer, packet) {
                    Pushed::Queued => {}
                    Pushed::QueuedEvictedOther => shared.drop_packet(DropReason::QueueFull),
                    Pushed::DroppedPeerFull => shared.drop_packet(DropReason::PeerQueueFull),
                    Pushed::Closed => break,
                }
                shared.metrics.queue_depth.set(shared.inbound.len() as i64);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %Sensitive::new(e), "a packet stream ended");
                break;
            }
        }
    }
    let mut streams = shared
        .inbound_streams
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(count) = streams.get_mut(&peer) {
        *count -= 1;
        if *count == 0 {
            streams.remove(&peer);
        }
    }
}

/// Serves each request stream of one protocol with `handle`, at most
/// [`MAX_CONCURRENT_REQUESTS`] at once (streams beyond that are dropped),
/// each within [`REQUEST_TIMEOUT`].
async fn serve_requests<F, Fut>(
    mut incoming: net::Incoming,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    handle: F,
) where
    F: Fn(libp2p::Stream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    loop {
        let (_, stream) = tokio::select! {
            _ = shutdown.changed() => return,
            next = incoming.recv() => match next { Some(n) => n, None => return },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let request = handle(stream);
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(Err(e)) = tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                tracing::debug!(error = %Sensitive::new(e), "a {what} request failed");
            }
        });
    }
}

pub(super) async fn serve_directories(
    incoming: net::Incoming,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    serve_requests(incoming, shutdown, "directory", move |mut stream| {
        let descriptors = shared
            .directory
            .read()
            .map(|d| d.signed())
            .unwrap_or_default();
        async move { wire::serve_directory(&mut stream, &descriptors).await }
    })
    .await;
}

pub(super) async fn serve_mailboxes(
    incoming: net::Incoming,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    serve_requests(incoming, shutdown, "mailbox", move |mut stream| {
        let shared = shared.clone();
        async move {
            let capability = wire::read_mailbox_request(&mut stream).await?;
            let mailbox = MailboxId::from_capability(&capability).0;
            let now = shared.clock.now_ms();
            let lookup = shared.clone();
            let held =
                tokio::task::spawn_blocking(move || lookup.store.mailbox_peek(&mailbox, now))
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            let (seqs, replies): (Vec<u64>, Vec<Vec<u8>>) =
                held.into_iter().take(wire::MAILBOX_ANSWER_SLOTS).unzip();
            // Filler is random bytes: to the client a slot without a reply
            // looks like one sealed for someone else, and never opens.
            let (answer, carried) = wire::mailbox_answer(&replies, |slot| {
                rand::Rng::fill_bytes(&mut rand::rng(), slot)
            });
            if wire::answer_mailbox(&mut stream, &answer).await? {
                let seqs: Vec<u64> = seqs.into_iter().take(carried).collect();
                if !seqs.is_empty() {
                    let store = shared.clone();
                    let held = tokio::task::spawn_blocking(move || {
                        store.store.mailbox_remove(&mailbox, &seqs)?;
                        store.store.mailbox_len()
                    })
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                    shared.metrics.mailbox_replies.set(held as i64);
                }
                wire::confirm_mailbox_deletion(&mut stream).await?;
            }
            Ok(())
        }
    })
    .await;
}
