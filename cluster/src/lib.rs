//! The cluster: which nodes there are, what they do, and how they talk.
//!
//! - [`membership`]: the [`Membership`] trait (the nodes of the cluster and
//!   their roles) and its static implementation from `--seed-nodes`.
//! - [`etcd`]: the cluster in etcd: membership by leases, index metadata,
//!   the leader's election.
//! - [`allocation`]: which data node holds each shard of a new index.
//! - [`protocol`]: the internal calls between nodes (metadata, routed
//!   writes, realtime gets, refreshes, liveness), carried as Flight actions
//!   on the node's Flight address.
//! - [`client`]: the calling side, with timeouts and errors that name the node.
//! - [`peers`]: the index layer's [`quidditch_index::peers::Peers`] over them.

pub mod allocation;
pub mod client;
pub mod etcd;
pub mod membership;
pub mod peers;
pub mod protocol;

pub use membership::{Liveness, Membership, NodeInfo, Role, StaticMembership};
