//! Who is in the cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes searches and writes, plans and merges.
    Coordinator,
    /// Holds shards and runs the leaf stages of queries.
    Data,
    /// May lead the cluster (elections come with etcd).
    Master,
}

impl Role {
    /// Parses `coordinator`, `data` or `master`.
    pub fn parse(s: &str) -> Result<Role, String> {
        match s.trim() {
            "coordinator" => Ok(Role::Coordinator),
            "data" => Ok(Role::Data),
            "master" => Ok(Role::Master),
            other => Err(format!(
                "unknown role [{other}], expected coordinator, data or master"
            )),
        }
    }

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Data => "data",
            Role::Master => "master",
        }
    }
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Its Flight address, `host:port` (every gRPC service of the node).
    pub flight: String,
    /// Its HTTP address, when known.
    #[serde(default)]
    pub http: Option<String>,
    /// Its roles.
    pub roles: Vec<Role>,
}

impl NodeInfo {
    /// Whether the node has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The URL of its gRPC services.
    pub fn url(&self) -> String {
        format!("http://{}", self.flight)
    }
}

/// The nodes of the cluster as this node knows them.
pub trait Membership: Send + Sync + std::fmt::Debug {
    /// This node.
    fn local(&self) -> NodeInfo;
    /// Every node, this one included, by id.
    fn nodes(&self) -> Vec<NodeInfo>;

    /// The nodes that hold shards, by id.
    fn data_nodes(&self) -> Vec<NodeInfo> {
        self.nodes().into_iter().filter(|n| n.has(Role::Data)).collect()
    }

    /// A node by id.
    fn node(&self, id: &str) -> Option<NodeInfo> {
        self.nodes().into_iter().find(|n| n.id == id)
    }
}

/// A static cluster: this node plus the data nodes of `--seed-nodes`.
#[derive(Debug)]
pub struct StaticMembership {
    local: NodeInfo,
    nodes: BTreeMap<String, NodeInfo>,
}

impl StaticMembership {
    /// The cluster of `local` and `seeds`.
    pub fn new(local: NodeInfo, seeds: Vec<NodeInfo>) -> StaticMembership {
        let mut nodes: BTreeMap<String, NodeInfo> = seeds.into_iter().map(|n| (n.id.clone(), n)).collect();
        nodes.insert(local.id.clone(), local.clone());
        StaticMembership { local, nodes }
    }

    /// Parses `--seed-nodes`: `ID@HOST:PORT,...`, each a data node's Flight address.
    pub fn parse_seeds(spec: &str) -> Result<Vec<NodeInfo>, String> {
        let mut out: Vec<NodeInfo> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part
                .split_once('@')
                .ok_or_else(|| format!("seed node [{part}] is not ID@HOST:PORT"))?;
            let port = addr.rsplit_once(':').map(|(_, p)| p);
            if id.is_empty() || port.is_none_or(|p| p.parse::<u16>().is_err()) {
                return Err(format!("seed node [{part}] is not ID@HOST:PORT"));
            }
            if out.iter().any(|n| n.id == id) {
                return Err(format!("seed node id [{id}] appears twice"));
            }
            out.push(NodeInfo {
                id: id.to_string(),
                flight: addr.to_string(),
                http: None,
                roles: vec![Role::Data],
            });
        }
        Ok(out)
    }
}

impl Membership for StaticMembership {
    fn local(&self) -> NodeInfo {
        self.local.clone()
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_and_reject_garbage() {
        let seeds = StaticMembership::parse_seeds("d1@127.0.0.1:7001, d2@localhost:7002").unwrap_or_default();
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[1].url(), "http://localhost:7002");
        assert!(StaticMembership::parse_seeds("d1@127.0.0.1").is_err());
        assert!(StaticMembership::parse_seeds("127.0.0.1:7001").is_err());
        assert!(StaticMembership::parse_seeds("a@h:1,a@h:2").is_err());
    }
}

/// Which nodes answered their last ping, and why the others did not.
#[derive(Debug, Default)]
pub struct Liveness {
    down: parking_lot::RwLock<BTreeMap<String, String>>,
}

impl Liveness {
    /// Records that `id` answered.
    pub fn up(&self, id: &str) -> bool {
        self.down.write().remove(id).is_some()
    }

    /// Records that `id` did not answer, and why.
    pub fn down(&self, id: &str, why: String) -> bool {
        self.down.write().insert(id.to_string(), why).is_none()
    }

    /// Why `id` did not answer its last ping, if it did not.
    pub fn why_down(&self, id: &str) -> Option<String> {
        self.down.read().get(id).cloned()
    }
}
