//! Configuration of `quidditch serve`: every field is settable by a CLI flag,
//! a `QUIDDITCH_*` environment variable, or the TOML file given with
//! `--config`, in that order of precedence.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

use quidditch_cluster::etcd::EtcdConfig;
use quidditch_cluster::{NodeInfo, Role, StaticMembership};

use crate::auth::{TokenConfig, UserConfig};

/// Default HTTP address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9200";
/// Default Flight (Flight SQL and plain Flight) address.
pub const DEFAULT_FLIGHT_ADDR: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./quidditch-data";

/// `quidditch serve` options as given on the command line or in the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// HTTP listen address (port 0 picks a free port) [default: 127.0.0.1:9200].
    #[arg(long, env = "QUIDDITCH_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Arrow Flight listen address, for Flight SQL and plain Flight (port 0
    /// picks a free port) [default: 127.0.0.1:50051].
    #[arg(long, env = "QUIDDITCH_FLIGHT_ADDR")]
    pub flight_addr: Option<SocketAddr>,
    /// Data directory [default: ./quidditch-data].
    #[arg(long, env = "QUIDDITCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node name [default: the host name].
    #[arg(long, env = "QUIDDITCH_NODE_ID")]
    pub node_id: Option<String>,
    /// Memory limit of the operators of the queries running on the node, in MiB [default: 4096].
    #[arg(long, env = "QUIDDITCH_QUERY_MEMORY_MB")]
    pub query_memory_mb: Option<usize>,
    /// Roles of the node, comma-separated: coordinator, data, master
    /// [default: all three].
    #[arg(long, env = "QUIDDITCH_ROLES")]
    pub roles: Option<String>,
    /// The data nodes of a static cluster, `ID@HOST:PORT,...` (their Flight
    /// addresses). Without it, and with every role, the node is the
    /// embedded single node.
    #[arg(long, env = "QUIDDITCH_SEED_NODES")]
    pub seed_nodes: Option<String>,
    /// etcd client URLs, `http://HOST:PORT,...`: the cluster's membership,
    /// index metadata and leader election live there.
    #[arg(long, env = "QUIDDITCH_ETCD")]
    pub etcd: Option<String>,
    /// The cluster's name in etcd [default: quidditch].
    #[arg(long, env = "QUIDDITCH_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// The host other nodes reach this one at (its HTTP and Flight ports
    /// stay those bound) [default: the bound address's IP].
    #[arg(long, env = "QUIDDITCH_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Seconds a node stays in the cluster after its last lease renewal
    /// [default: 5].
    #[arg(long, env = "QUIDDITCH_LEASE_TTL")]
    pub lease_ttl: Option<u64>,
    /// TOML configuration file with the same keys (`http_addr`, `data_dir`, ...).
    #[arg(long, env = "QUIDDITCH_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_addr: Option<SocketAddr>,
    flight_addr: Option<SocketAddr>,
    /// Users allowed in (argon2-hashed passwords); none means no authentication.
    #[serde(default)]
    users: Vec<UserConfig>,
    /// API tokens allowed in (argon2-hashed).
    #[serde(default)]
    tokens: Vec<TokenConfig>,
    data_dir: Option<PathBuf>,
    node_id: Option<String>,
    query_memory_mb: Option<usize>,
    roles: Option<String>,
    seed_nodes: Option<String>,
    etcd: Option<String>,
    cluster_name: Option<String>,
    lease_ttl: Option<u64>,
    advertise_host: Option<String>,
}

/// Resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// Flight listen address.
    pub flight_addr: SocketAddr,
    /// Users, from the config file only (secrets do not belong in flags).
    pub users: Vec<UserConfig>,
    /// API tokens, from the config file only.
    pub tokens: Vec<TokenConfig>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Node name.
    pub node_id: String,
    /// Query memory limit in bytes.
    pub query_memory: usize,
    /// The node's roles.
    pub roles: Vec<Role>,
    /// The data nodes of a static cluster.
    pub seeds: Vec<NodeInfo>,
    /// The cluster's name.
    pub cluster_name: String,
    /// The cluster's etcd, when it has one.
    pub etcd: Option<EtcdConfig>,
    /// The host other nodes reach this one at, when not the bound IP.
    pub advertise_host: Option<String>,
}

impl ServeConfig {
    /// Whether the node is part of a cluster rather than the embedded
    /// single node.
    pub fn clustered(&self) -> bool {
        !self.seeds.is_empty() || self.etcd.is_some() || self.roles.len() != ALL_ROLES.len()
    }
}

/// Every role, the default.
pub const ALL_ROLES: [Role; 3] = [Role::Coordinator, Role::Data, Role::Master];

fn parse_roles(spec: &str) -> anyhow::Result<Vec<Role>> {
    let mut roles = spec
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Role::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    roles.sort();
    roles.dedup();
    anyhow::ensure!(!roles.is_empty(), "--roles names no role");
    Ok(roles)
}

impl ServeArgs {
    /// Merges flags and environment over the config file over defaults.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let http_addr = match self.http_addr.or(file.http_addr) {
            Some(addr) => addr,
            None => DEFAULT_HTTP_ADDR.parse()?,
        };
        let flight_addr = match self.flight_addr.or(file.flight_addr) {
            Some(addr) => addr,
            None => DEFAULT_FLIGHT_ADDR.parse()?,
        };
        let node_id = self
            .node_id
            .or(file.node_id)
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "quidditch-1".to_string());
        let cluster_name = self
            .cluster_name
            .or(file.cluster_name)
            .unwrap_or_else(|| "quidditch".to_string());
        let lease_ttl = self.lease_ttl.or(file.lease_ttl).unwrap_or(5);
        anyhow::ensure!(lease_ttl >= 1, "--lease-ttl must be at least 1 second");
        let etcd = match self.etcd.or(file.etcd) {
            Some(spec) => {
                let endpoints: Vec<String> = spec
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect();
                anyhow::ensure!(!endpoints.is_empty(), "--etcd names no endpoint");
                Some(EtcdConfig {
                    endpoints,
                    cluster_name: cluster_name.clone(),
                    lease_ttl: std::time::Duration::from_secs(lease_ttl),
                })
            }
            None => None,
        };
        let seed_nodes = self.seed_nodes.or(file.seed_nodes);
        anyhow::ensure!(
            etcd.is_none() || seed_nodes.is_none(),
            "--seed-nodes and --etcd exclude each other: with etcd, nodes find each other there"
        );
        Ok(ServeConfig {
            cluster_name,
            etcd,
            advertise_host: self.advertise_host.or(file.advertise_host),
            http_addr,
            flight_addr,
            users: file.users,
            tokens: file.tokens,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            node_id,
            query_memory: self.query_memory_mb.or(file.query_memory_mb).unwrap_or(4096) << 20,
            roles: match self.roles.or(file.roles) {
                Some(spec) => parse_roles(&spec)?,
                None => ALL_ROLES.to_vec(),
            },
            seeds: match seed_nodes {
                Some(spec) => StaticMembership::parse_seeds(&spec).map_err(anyhow::Error::msg)?,
                None => Vec::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_over_defaults() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("q.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9999\"\ndata_dir = \"/tmp/from-file\"\n",
        )?;
        let args = ServeArgs {
            data_dir: Some(PathBuf::from("/tmp/from-flag")),
            config: Some(file),
            ..Default::default()
        };
        let cfg = args.resolve()?;
        assert_eq!(cfg.http_addr.port(), 9999);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/from-flag"));
        let defaults = ServeArgs::default().resolve()?;
        assert_eq!(defaults.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(defaults.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        Ok(())
    }

    #[test]
    fn unknown_config_keys_are_rejected() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("q.toml");
        std::fs::write(&file, "htp_addr = \"x\"\n")?;
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert!(args.resolve().is_err());
        Ok(())
    }
}
