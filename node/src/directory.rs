//! The node's view of the federation: verified descriptors, newest per node.

use std::collections::HashMap;

use leak_protocol::{
    NodeId,
    directory::{Descriptor, DescriptorError, Freshness, SignedDescriptor},
};

/// What happened to an offered descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// New node, or a newer descriptor of a known node.
    Accepted,
    /// Already known (same or older publication time).
    Known,
}

/// Verified descriptors, bounded in number.
pub struct Directory {
    entries: HashMap<NodeId, (Descriptor, SignedDescriptor)>,
    max_age_secs: u64,
    max_clock_skew_secs: u64,
    max_nodes: usize,
}

/// Why an offered descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It failed verification.
    #[error(transparent)]
    Invalid(#[from] DescriptorError),
    /// The directory is full.
    #[error("the directory is full")]
    Full,
}

impl Refused {
    /// A short stable label, for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Invalid(DescriptorError::BadSignature) => "bad_signature",
            Self::Invalid(DescriptorError::Stale) => "stale",
            Self::Invalid(DescriptorError::FromTheFuture) => "from_the_future",
            Self::Invalid(DescriptorError::Inconsistent(_)) => "inconsistent",
            Self::Invalid(_) => "malformed",
        }
    }
}

impl Directory {
    /// An empty directory.
    pub fn new(max_age_secs: u64, max_clock_skew_secs: u64, max_nodes: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max_age_secs,
            max_clock_skew_secs,
            max_nodes,
        }
    }

    fn freshness(&self, now: u64) -> Freshness {
        Freshness {
            now,
            max_age_secs: self.max_age_secs,
            max_clock_skew_secs: self.max_clock_skew_secs,
        }
    }

    /// Verifies `signed` and keeps it if it is new or newer.
    pub fn offer(&mut self, signed: SignedDescriptor, now: u64) -> Result<Offer, Refused> {
        let descriptor = signed.verify(self.freshness(now))?;
        match self.entries.get(&descriptor.node) {
            Some((known, _)) if known.published_at >= descriptor.published_at => {
                return Ok(Offer::Known);
            }
            None if self.entries.len() >= self.max_nodes => return Err(Refused::Full),
            _ => {}
        }
        self.entries.insert(descriptor.node, (descriptor, signed));
        Ok(Offer::Accepted)
    }

    /// Drops stale descriptors; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        let max_age = self.max_age_secs;
        self.entries
            .retain(|_, (d, _)| now.saturating_sub(d.published_at) <= max_age);
        before - self.entries.len()
    }

    /// The descriptor of `node`.
    pub fn get(&self, node: &NodeId) -> Option<&Descriptor> {
        self.entries.get(node).map(|(d, _)| d)
    }

    /// Every verified descriptor.
    pub fn descriptors(&self) -> impl Iterator<Item = &Descriptor> {
        self.entries.values().map(|(d, _)| d)
    }

    /// Every signed descriptor, to serve to others.
    pub fn signed(&self) -> Vec<SignedDescriptor> {
        self.entries.values().map(|(_, s)| s.clone()).collect()
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
