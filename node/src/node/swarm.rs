//! The libp2p event loop: gossip, connections, commands from the other tasks.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use leak_protocol::directory::SignedDescriptor;
use libp2p::{gossipsub, swarm::SwarmEvent};
use tokio::sync::{mpsc, watch};

use super::{
    fetch::fetch_directory,
    gossip::offer_gossip,
    shared::{Command, Shared},
};
use crate::{
    directory::Refused,
    net::{Behaviour, BehaviourEvent, POLICY_TOPIC},
    safelog::Sensitive,
};

pub(super) async fn run_swarm(
    mut swarm: libp2p::Swarm<Behaviour>,
    topic: gossipsub::IdentTopic,
    mut commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    use libp2p::metrics::Recorder as _;
    let mut last_welcome: HashMap<gossipsub::TopicHash, Option<Instant>> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(command) = commands.recv() => match command {
                Command::Publish(name, bytes) => {
                    let topic = gossipsub::IdentTopic::new(name);
                    if let Err(e) = swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                        tracing::debug!(error = %e, topic = name, "not published yet");
                    }
                }
                Command::Dial(addr) => {
                    if let Err(e) = swarm.dial(addr) {
                        tracing::warn!(error = %Sensitive::new(e), "cannot dial a bootstrap node");
                    }
                }
            },
            event = swarm.select_next_some() => {
                shared.metrics.libp2p.record(&event);
                match event {
                    SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => {
                        shared.metrics.libp2p.record(&event);
                        match event {
                            gossipsub::Event::Message { propagation_source, message_id, message }
                                if message.topic != topic.hash() =>
                            {
                                let acceptance = offer_gossip(&shared, &message);
                                swarm.behaviour_mut().gossipsub.report_message_validation_result(
                                    &message_id,
                                    &propagation_source,
                                    acceptance,
                                );
                            }
                            gossipsub::Event::Message { propagation_source, message_id, message } => {
                                let acceptance = match SignedDescriptor::from_bytes(&message.data)
                                    .map_err(|e| {
                                        let refused = Refused::from(e);
                                        shared.metrics.refuse_descriptor(refused.as_str());
                                        refused
                                    })
                                    .and_then(|signed| shared.offer(signed))
                                {
                                    Ok(_) => {
                                        shared.refresh_addresses();
                                        gossipsub::MessageAcceptance::Accept
                                    }
                                    // Not for us to pass on, but maybe no fault of
                                    // the peer's (it may hold a newer roster).
                                    Err(Refused::Full | Refused::NoRoster | Refused::NotRostered
                                        | Refused::BeyondRoster) => gossipsub::MessageAcceptance::Ignore,
                                    Err(Refused::Invalid(e)) => {
                                        tracing::debug!(reason = %e, "refused a descriptor");
                                        gossipsub::MessageAcceptance::Reject
                                    }
                                };
                                swarm.behaviour_mut().gossipsub.report_message_validation_result(
                                    &message_id,
                                    &propagation_source,
                                    acceptance,
                                );
                            }
                            // A new subscriber: make sure it hears of us
                            // (our descriptor, the policy in force) soon, at
                            // most once a second per topic however many
                            // join.
                            gossipsub::Event::Subscribed { topic: subscribed, .. } => {
                                let last = last_welcome.entry(subscribed.clone()).or_insert(None);
                                if last.is_some_and(|t: Instant| t.elapsed() < Duration::from_secs(1)) {
                                    continue;
                                }
                                let mut messages = Vec::new();
                                if subscribed == topic.hash() {
                                    let own = shared.own_descriptor.read().ok().and_then(|d| d.clone());
                                    messages.extend(own.map(|d| d.to_bytes()));
                                } else if subscribed == gossipsub::IdentTopic::new(POLICY_TOPIC).hash() {
                                    messages.extend(shared.policy.signed());
                                }
                                for bytes in messages {
                                    let _ = swarm.behaviour_mut().gossipsub.publish(subscribed.clone(), bytes);
                                }
                                *last = Some(Instant::now());
                            }
                            _ => {}
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                        shared.metrics.libp2p.record(&event);
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => {
                        shared.metrics.libp2p.record(&event);
                    }
                    SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                        shared.metrics.peers.set(swarm.connected_peers().count() as i64);
                        if endpoint.is_dialer() && num_established.get() == 1 {
                            tokio::spawn(fetch_directory(peer_id, shared.clone()));
                        }
                    }
                    SwarmEvent::ConnectionClosed { .. } => {
                        shared.metrics.peers.set(swarm.connected_peers().count() as i64);
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        tracing::debug!(error = %Sensitive::new(error), "an outgoing connection failed");
                    }
                    _ => {}
                }
            }
        }
    }
}
