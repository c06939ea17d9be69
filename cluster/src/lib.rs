//! Cluster membership, metadata and shard allocation, with an etcd and a
//! local implementation of one store trait.
//!
//! Not implemented yet: the embedded single node keeps its metadata in the
//! data directory through `quidditch-index`. This crate is filled by the
//! distributed-execution and etcd work and exports nothing until then.
