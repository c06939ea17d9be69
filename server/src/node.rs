//! A node: the embedded single node (every role in one process, metadata
//! and shards in the data directory), or a node of a cluster (`--roles`,
//! `--seed-nodes`) whose data nodes hold the shards and run the leaf
//! stages of queries, with every gRPC service on the Flight address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use quidditch_executor::{Engine, EngineConfig};
use quidditch_flight::{AuthGate, FlightConfig};
use quidditch_index::Indices;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use quidditch_cluster::client::Client;
use quidditch_cluster::etcd::EtcdCluster;
use quidditch_cluster::peers::ClusterPeers;
use quidditch_cluster::protocol::Hello;
use quidditch_cluster::{Membership, NodeInfo, Role, StaticMembership};
use quidditch_index::peers::Peers;

use crate::auth::Credentials;
use crate::cluster::ClusterState;
use crate::config::ServeConfig;
use crate::http;

/// How long a node may take to answer a ping when a request failed or
/// timed out and the node that caused it is sought.
pub const SLOW_NODE_PING: std::time::Duration = std::time::Duration::from_millis(300);

/// Shared state of a running node.
#[derive(Debug)]
pub struct Node {
    /// Node name.
    pub node_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// The indices on this node.
    pub indices: Arc<Indices>,
    /// The query engine.
    pub engine: Engine,
    /// When the node started.
    pub started: Instant,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The bound Flight address.
    pub flight_addr: SocketAddr,
    /// Credentials every request must present, when configured.
    pub auth: Option<Arc<AuthGate>>,
    /// Open scrolls.
    pub scrolls: http::Scrolls,
    /// The node's roles.
    pub roles: Vec<Role>,
    /// The cluster, when the node is part of one.
    pub cluster: Option<Arc<ClusterState>>,
    /// What its searches did.
    pub search_metrics: http::SearchMetrics,
}

impl Node {
    /// Whether a request that ended in `outcome` should run once more: it
    /// failed because another node of the cluster did, which now counts as
    /// down (see [`ClusterState::blame`]).
    pub async fn retry<T, E: std::fmt::Display>(&self, outcome: &Result<T, E>) -> bool {
        let (Err(err), Some(cluster)) = (outcome, &self.cluster) else {
            return false;
        };
        let err = err.to_string();
        if cluster.blame(&err) {
            return true;
        }
        // A transport failure that does not name the node (a connection
        // that went silent): the nodes that do not answer a ping now.
        const TRANSPORT: [&str; 3] = ["transport error", "http2 error", "tcp connect error"];
        TRANSPORT.iter().any(|t| err.contains(t)) && cluster.blame_slow(SLOW_NODE_PING).await > 0
    }
}

/// Opens the data directory and serves HTTP until SIGTERM or Ctrl-C, then
/// commits every shard and returns.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let flight_listener = TcpListener::bind(config.flight_addr)
        .await
        .with_context(|| format!("binding Flight on {}", config.flight_addr))?;
    let flight_addr = flight_listener.local_addr()?;
    let auth = Credentials::new(config.users.clone(), config.tokens.clone())?
        .map(|c| Arc::new(AuthGate::new(Arc::new(c))));
    let engine_config = EngineConfig {
        memory_limit: Some(config.query_memory),
        ..EngineConfig::default()
    };
    let advertised = |addr: SocketAddr| match &config.advertise_host {
        Some(host) => format!("{host}:{}", addr.port()),
        None => addr.to_string(),
    };
    let local = NodeInfo {
        id: config.node_id.clone(),
        flight: advertised(flight_addr),
        http: Some(advertised(http_addr)),
        roles: config.roles.clone(),
    };
    let cluster = if config.clustered() {
        anyhow::ensure!(
            auth.is_none(),
            "users and tokens are not supported in a cluster yet: nodes do not authenticate to each other"
        );
        let client = Arc::new(Client::default());
        Some(Arc::new(match &config.etcd {
            Some(etcd) => {
                let etcd = EtcdCluster::join(etcd, local.clone(), &config.data_dir)
                    .await
                    .map_err(anyhow::Error::msg)?;
                ClusterState::with_etcd(etcd, client)
            }
            None => {
                let membership: Arc<dyn Membership> =
                    Arc::new(StaticMembership::new(local.clone(), config.seeds.clone()));
                ClusterState::new(membership, client)
            }
        }))
    } else {
        None
    };
    let peers = cluster.as_ref().map(|c| {
        let handle = tokio::runtime::Handle::current();
        let peers = match &c.etcd {
            Some(etcd) => ClusterPeers::with_etcd(
                Arc::clone(etcd),
                Arc::clone(&c.liveness),
                Arc::clone(&c.client),
                handle,
            ),
            None => ClusterPeers::new(
                Arc::clone(&c.membership),
                Arc::clone(&c.liveness),
                Arc::clone(&c.client),
                handle,
            ),
        };
        Arc::new(peers) as Arc<dyn Peers>
    });
    let data_dir = config.data_dir.clone();
    let indices = tokio::task::spawn_blocking(move || Indices::open_with(&data_dir, peers))
        .await?
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let indices = Arc::new(indices);
    let refresher = indices.spawn_refresher();
    let mut worker = None;
    let engine = match &cluster {
        None => Engine::new(Arc::clone(&indices), engine_config)?,
        Some(state) => {
            let local_worker = if local.has(Role::Data) {
                let w = quidditch_executor::distributed::worker(
                    Arc::clone(&indices),
                    &engine_config,
                    quidditch_planner::udfs(),
                )?;
                let url = quidditch_executor::distributed::node_url(&local)?;
                let context = w.to_local_worker_context(url);
                worker = Some(w);
                Some(context)
            } else {
                None
            };
            Engine::clustered(
                Arc::clone(&indices),
                engine_config,
                Arc::clone(&state.membership),
                Arc::clone(&state.liveness),
                local_worker,
            )?
        }
    };
    let mut background = Vec::new();
    if let Some(state) = &cluster {
        if let Some(etcd) = &state.etcd {
            let revision = crate::cluster::reconcile(etcd, &indices, true).await?;
            background.push(crate::cluster::spawn_metadata_follower(
                Arc::clone(etcd),
                Arc::clone(&indices),
                revision,
            ));
            background.extend(etcd.spawn());
            background.push(crate::cluster::spawn_allocator(Arc::clone(state)));
        }
        background.push(state.spawn_monitor(Arc::clone(&indices)));
        state.refresh(&indices).await;
    }
    let flight = quidditch_flight::flight_service(FlightConfig {
        engine: engine.clone(),
        auth: auth.clone(),
        hello: Hello {
            node_id: config.node_id.clone(),
            roles: config.roles.clone(),
            http: local.http.clone().unwrap_or_default(),
        },
    })?;
    let node = Arc::new(Node {
        node_id: config.node_id.clone(),
        cluster_name: config.cluster_name.clone(),
        indices: Arc::clone(&indices),
        engine,
        started: Instant::now(),
        auth,
        scrolls: http::Scrolls::default(),
        http_addr,
        flight_addr,
        roles: config.roles.clone(),
        cluster,
        search_metrics: http::SearchMetrics::default(),
    });
    tracing::info!(%http_addr, %flight_addr, data_dir = %config.data_dir.display(), "quidditch is ready");
    println!(
        "{}",
        serde_json::json!({
            "node_id": config.node_id,
            "http": http_addr.to_string(),
            "flight": flight_addr.to_string(),
        })
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut flight_stop = stop_rx.clone();
    let flight_server = tonic::transport::Server::builder()
        .add_service(flight)
        .add_optional_service(worker.map(|w| w.into_worker_server()))
        .serve_with_incoming_shutdown(no_delay(flight_listener), async move {
            let _ = flight_stop.wait_for(|stop| *stop).await;
        });
    let mut http_stop = stop_rx;
    let http_server =
        axum::serve(listener, http::router(Arc::clone(&node))).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        });
    let servers = async {
        tokio::try_join!(async { http_server.await.context("HTTP server") }, async {
            flight_server.await.context("Flight server")
        })
    };
    tokio::pin!(servers);
    tokio::select! {
        result = &mut servers => {
            result?;
        }
        () = shutdown_signal() => {
            let _ = stop_tx.send(true);
            servers.await?;
        }
    }
    refresher.abort();
    for task in background {
        task.abort();
    }
    if let Some(etcd) = node.cluster.as_ref().and_then(|c| c.etcd.as_ref()) {
        etcd.leave().await;
    }
    tracing::info!("shutting down: committing every shard");
    tokio::task::spawn_blocking(move || indices.close()).await??;
    Ok(())
}

/// The connections of a listener with Nagle's algorithm off: gRPC answers
/// are small writes that must not wait for the peer's delayed ACK (40 ms a
/// round trip between nodes otherwise).
fn no_delay(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
