//! The directory: descriptors spread to every node, and forged or stale ones
//! are refused and counted wherever they arrive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use leak_node::{
    Identity,
    directory::{Offer, Refused},
    node::unix_now,
};
use leak_protocol::{
    NodeId,
    directory::{DescriptorError, SignedDescriptor},
};
use leak_tests::{
    TestNode, descriptor_for, knows, own_descriptor, start_test_node, start_test_nodes,
    test_config, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(120);

async fn wait_for_convergence(nodes: &[TestNode], n: usize) {
    let converged = || {
        nodes.iter().all(|a| {
            a.node.directory().len() == n && nodes.iter().all(|b| knows(&a.node, b.node.node_id()))
        })
    };
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !converged() {
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<Vec<usize>> = nodes
                .iter()
                .map(|a| {
                    (0..nodes.len())
                        .filter(|&j| knows(&a.node, nodes[j].node.node_id()))
                        .collect()
                })
                .collect();
            panic!("timed out waiting for all {n} nodes to know each other: node i knows {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_spread_and_forged_or_stale_ones_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_test_nodes(root.path(), 3, 3600).await;
    wait_for_convergence(&nodes, 3).await;

    // A newcomer learns everyone, and everyone learns of it.
    let bootstrap = vec![nodes[0].node.dial_addr()];
    nodes.push(start_test_node(root.path(), "n3", 3600, bootstrap).await);
    wait_for_convergence(&nodes, 4).await;

    let publisher = &nodes[0].node;
    let receivers: Vec<_> = nodes[1..].iter().map(|n| &n.node).collect();
    let template = own_descriptor(publisher);
    let now = unix_now();

    // Forged: a descriptor naming `victim`, carrying the signature the
    // throwaway `signer` made over its own descriptor.
    let (signer, victim) = (Identity::generate(), Identity::generate());
    let genuine = descriptor_for(&signer, &template, now)
        .sign(signer.seed())
        .unwrap();
    let (_, signature): (Vec<u8>, Vec<u8>) = postcard::from_bytes(&genuine.to_bytes()).unwrap();
    let mut forged_body = vec![leak_protocol::directory::DESCRIPTOR_VERSION];
    forged_body.extend(postcard::to_allocvec(&descriptor_for(&victim, &template, now)).unwrap());
    let forged_bytes = postcard::to_allocvec(&(forged_body, signature)).unwrap();
    let forged = SignedDescriptor::from_bytes(&forged_bytes).unwrap();

    // Stale: validly signed, published longer ago than the directory keeps.
    let stale_identity = Identity::generate();
    let max_age = test_config(root.path(), 3600, vec![])
        .directory
        .max_age_secs;
    let stale = descriptor_for(&stale_identity, &template, now - max_age - 120)
        .sign(stale_identity.seed())
        .unwrap();

    // The roster admits all three (so what refuses them is their forgery
    // or their age, not the roster) and not `stranger`.
    let running: Vec<_> = nodes.iter().map(|n| &n.node).collect();
    leak_tests::roster::admit_now(
        root.path(),
        &running,
        &[signer.node_id(), victim.node_id(), stale_identity.node_id()],
        &template.family,
    );
    let stranger = Identity::generate();
    let unrostered = descriptor_for(&stranger, &template, now)
        .sign(stranger.seed())
        .unwrap();
    publisher
        .publish_descriptor_bytes(unrostered.to_bytes())
        .await
        .unwrap();
    publisher
        .publish_descriptor_bytes(forged_bytes.clone())
        .await
        .unwrap();
    publisher
        .publish_descriptor_bytes(stale.to_bytes())
        .await
        .unwrap();
    wait_until(TIMEOUT, "every other node to refuse both", || {
        let done = receivers.iter().all(|n| {
            n.metrics().refused("bad_signature") >= 1
                && n.metrics().refused("stale") >= 1
                && n.metrics().refused("not_rostered") >= 1
        });
        async move { done }
    })
    .await;
    let absent = |node: NodeId| {
        nodes
            .iter()
            .all(|n| !knows(&n.node, node) && n.node.directory().len() == 4)
    };
    assert!(
        absent(victim.node_id()),
        "the forged descriptor is not listed"
    );
    assert!(absent(signer.node_id()), "nor is its signer");
    assert!(absent(stale_identity.node_id()), "nor the stale one");
    assert!(absent(stranger.node_id()), "nor the node no roster admits");

    // Offered directly, they are refused too, with the reason.
    assert_eq!(
        publisher.offer_descriptor(forged),
        Err(Refused::Invalid(DescriptorError::BadSignature))
    );
    assert_eq!(
        publisher.offer_descriptor(stale),
        Err(Refused::Invalid(DescriptorError::Stale))
    );
    // (Nodes may have refused a newcomer's descriptor as not rostered
    // before its roster reached them: count from here.)
    let not_rostered = publisher.metrics().refused("not_rostered");
    assert_eq!(
        publisher.offer_descriptor(unrostered),
        Err(Refused::NotRostered)
    );
    assert_eq!(publisher.metrics().refused("bad_signature"), 1);
    assert_eq!(publisher.metrics().refused("stale"), 1);
    assert_eq!(
        publisher.metrics().refused("not_rostered"),
        not_rostered + 1
    );
    assert!(absent(victim.node_id()) && absent(stale_identity.node_id()));
    // The genuine descriptor of the throwaway signer, by contrast, is taken.
    assert!(publisher.offer_descriptor(genuine).is_ok());
    assert!(knows(publisher, signer.node_id()));

    for n in nodes {
        n.node.shutdown().await.unwrap();
    }
}

/// A descriptor a node never hears of by gossip (here: offered to one node
/// directly) still reaches every node: they pull directories from each
/// other. Without the pulls, a descriptor that reached the bootstrap node
/// while a newcomer's first directory fetch was in flight stayed unknown to
/// the newcomer until its node published again, half an epoch later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_missed_by_gossip_arrives_by_directory_pulls() {
    // Short epochs: the pulls back off to a quarter epoch at most, 1 s here.
    const PERIOD: u64 = 4;
    let root = tempfile::tempdir().unwrap();
    let nodes = start_test_nodes(root.path(), 3, PERIOD).await;
    wait_for_convergence(&nodes, 3).await;

    let quiet = Identity::generate();
    let template = own_descriptor(&nodes[0].node);
    let running: Vec<_> = nodes.iter().map(|n| &n.node).collect();
    leak_tests::roster::admit_now(root.path(), &running, &[quiet.node_id()], &template.family);
    let mut descriptor = descriptor_for(&quiet, &template, unix_now());
    // Nobody can reach it: pulls from it fail, harmlessly.
    descriptor.addresses = vec!["/ip4/127.0.0.1/tcp/1".into()];
    let signed = descriptor.sign(quiet.seed()).unwrap();
    assert_eq!(nodes[0].node.offer_descriptor(signed), Ok(Offer::Accepted));
    wait_until(TIMEOUT, "every node to learn the quiet descriptor", || {
        let done = nodes.iter().all(|n| knows(&n.node, quiet.node_id()));
        async move { done }
    })
    .await;

    for n in nodes {
        n.node.shutdown().await.unwrap();
    }
}
