//! Test harness: runs the real `quidditch` binary on free ports and talks to
//! it over HTTP like a user would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// A running `quidditch serve` process; killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    /// Its Flight address, `host:port`.
    pub flight: String,
    /// Its node id.
    pub node_id: String,
    pub data_dir: PathBuf,
    client: reqwest::blocking::Client,
}

/// A static cluster of real processes: data nodes and one coordinator,
/// every one killed when the cluster is dropped (a failing test included).
pub struct Cluster {
    /// The data nodes, `data-0`, `data-1`, ...
    pub data: Vec<Server>,
    /// The coordinator (role `coordinator` only), which every request goes through.
    pub coordinator: Server,
}

impl Cluster {
    /// Starts `n` data nodes and a coordinator under `root`, and waits until
    /// the coordinator sees every data node.
    pub fn start(root: &Path, n: usize) -> Result<Cluster> {
        let mut data = Vec::new();
        for i in 0..n {
            let id = format!("data-{i}");
            let dir = root.join(&id);
            data.push(Server::start_with(&dir, &["--node-id", &id, "--roles", "data"])?);
        }
        let seeds: Vec<String> = data
            .iter()
            .map(|d| format!("{}@{}", d.node_id, d.flight))
            .collect();
        let coordinator = Server::start_coordinator(&root.join("coordinator"), &seeds.join(","))?;
        let cluster = Cluster { data, coordinator };
        cluster.wait_for_nodes(n + 1)?;
        Ok(cluster)
    }

    /// Waits until the coordinator's health counts `nodes` nodes.
    pub fn wait_for_nodes(&self, nodes: usize) -> Result<()> {
        for _ in 0..100 {
            let (_, health) = self.coordinator.get("/_cluster/health")?;
            if health["number_of_nodes"].as_u64() == Some(nodes as u64) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the coordinator did not see {nodes} nodes within 10 s")
    }
}

/// A real etcd on free loopback ports, in its own data directory; killed
/// when dropped.
pub struct Etcd {
    child: Option<Child>,
    /// Its client URL.
    pub url: String,
    peer_url: String,
    data_dir: PathBuf,
}

/// A free loopback port (free when this returns).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    /// Starts `etcd` (Debian's `etcd-server`) and waits until it answers.
    pub fn start(data_dir: &Path) -> Result<Etcd> {
        let mut etcd = Etcd {
            child: None,
            url: format!("http://127.0.0.1:{}", free_port()?),
            peer_url: format!("http://127.0.0.1:{}", free_port()?),
            data_dir: data_dir.to_path_buf(),
        };
        etcd.launch()?;
        Ok(etcd)
    }

    /// SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it again on the same ports and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.launch()
    }

    fn launch(&mut self) -> Result<()> {
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &self.url,
                "--advertise-client-urls",
                &self.url,
                "--listen-peer-urls",
                &self.peer_url,
                "--initial-advertise-peer-urls",
                &self.peer_url,
                "--initial-cluster",
                &format!("test={}", self.peer_url),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (Debian package etcd-server; scripts/test.sh installs it)")?;
        self.child = Some(child);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        for _ in 0..100 {
            if http
                .get(format!("{}/health", self.url))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("etcd did not answer within 10 s")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// `quidditch serve` on free loopback ports over `data_dir` with more
/// flags, its stdout piped (the ready line).
fn serve_command(data_dir: &Path, flags: &[impl AsRef<std::ffi::OsStr>]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quidditch"));
    command
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--flight-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    command
}

/// The flags of a node `id` of cluster `cluster` in the etcd at `url`.
pub fn etcd_flags(url: &str, cluster: &str, id: &str, roles: &str, ttl: u32) -> Vec<String> {
    [
        "--node-id",
        id,
        "--roles",
        roles,
        "--etcd",
        url,
        "--cluster-name",
        cluster,
        "--lease-ttl",
        &ttl.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

impl Server {
    /// Starts a node of the cluster `cluster` in `etcd` with these roles,
    /// with a lease of `ttl` seconds.
    pub fn start_etcd(etcd: &Etcd, root: &Path, id: &str, roles: &str, ttl: u32) -> Result<Server> {
        let flags = etcd_flags(&etcd.url, "test", id, roles, ttl);
        Server::start_with(
            &root.join(id),
            &flags.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// Runs a node that must refuse to start: it exits with a failure
    /// within 30 s, without printing its ready line. Returns what it wrote
    /// to stderr.
    pub fn refused(data_dir: &Path, flags: &[String]) -> Result<String> {
        let mut child = serve_command(data_dir, flags)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting quidditch")?;
        for _ in 0..600 {
            if let Some(status) = child.try_wait()? {
                let mut stdout = String::new();
                let mut stderr = String::new();
                std::io::Read::read_to_string(&mut child.stdout.take().context("stdout")?, &mut stdout)?;
                std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
                if status.success() || !stdout.is_empty() {
                    bail!("the node started ({status}): {stdout}");
                }
                return Ok(stderr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        bail!("the node did not exit within 30 s")
    }

    /// Starts a node on a free port with this data directory.
    pub fn start(data_dir: &Path) -> Result<Server> {
        Server::start_with(data_dir, &[])
    }

    /// Starts a coordinator-only node `coordinator` over these seed nodes.
    pub fn start_coordinator(data_dir: &Path, seeds: &str) -> Result<Server> {
        Server::start_with(
            data_dir,
            &[
                "--node-id",
                "coordinator",
                "--roles",
                "coordinator",
                "--seed-nodes",
                seeds,
            ],
        )
    }

    /// Starts a node on free ports with this data directory and more flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Result<Server> {
        let mut child = serve_command(data_dir, flags)
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting quidditch")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                bail!("quidditch did not print its ready line");
            }
        };
        let ready: Value = serde_json::from_str(&line).with_context(|| format!("ready line: {line}"))?;
        let http = ready["http"]
            .as_str()
            .ok_or_else(|| anyhow!("no http address in {line}"))?;
        Ok(Server {
            child: Some(child),
            url: format!("http://{http}"),
            flight: ready["flight"].as_str().unwrap_or_default().to_string(),
            node_id: ready["node_id"].as_str().unwrap_or_default().to_string(),
            data_dir: data_dir.to_path_buf(),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
        })
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let child = self.child.as_ref().ok_or_else(|| anyhow!("not running"))?;
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        Ok(())
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("already stopped"))?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        for _ in 0..600 {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        bail!("quidditch did not exit within 30s of SIGTERM")
    }

    /// Sends a request; returns status and parsed JSON body (Null when empty or not JSON).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: &str,
    ) -> Result<(u16, Value)> {
        let (status, text) = self.send(method, path, body, content_type)?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Sends a request; returns status and body text.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: &str,
    ) -> Result<(u16, String)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.header("content-type", content_type).body(body.to_string());
        }
        let resp = req.send()?;
        Ok((resp.status().as_u16(), resp.text()?))
    }

    /// The body text of a request; fails on a non-success status, with it.
    fn send_ok(&self, method: &str, path: &str, body: Option<&str>, content_type: &str) -> Result<String> {
        let (status, text) = self.send(method, path, body, content_type)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} failed with {status}: {text}");
        }
        Ok(text)
    }

    pub fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.request("GET", path, None, "")
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.request("PUT", path, Some(&body.to_string()), "application/json")
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.request("POST", path, Some(&body.to_string()), "application/json")
    }

    pub fn delete(&self, path: &str) -> Result<(u16, Value)> {
        self.request("DELETE", path, None, "")
    }

    /// `_bulk` with NDJSON built from (action, optional source) pairs.
    pub fn bulk(&self, path: &str, lines: &[Value]) -> Result<(u16, Value)> {
        self.request("POST", path, Some(&ndjson(lines)), "application/x-ndjson")
    }

    /// The text a `_bulk` answers; fails on a non-success status.
    pub fn bulk_text(&self, path: &str, lines: &[Value]) -> Result<String> {
        self.send_ok("POST", path, Some(&ndjson(lines)), "application/x-ndjson")
    }

    /// Runs SQL; fails on a non-200 answer.
    pub fn sql(&self, query: &str) -> Result<Value> {
        let (status, body) = self.post("/_sql", &json!({ "query": query }))?;
        if status != 200 {
            bail!("sql {query} failed with {status}: {body}");
        }
        Ok(body)
    }

    /// Rows of a SQL answer.
    pub fn sql_rows(&self, query: &str) -> Result<Vec<Value>> {
        Ok(self.sql(query)?["rows"].as_array().cloned().unwrap_or_default())
    }

    /// `SELECT count(*)` of an index.
    pub fn count(&self, index: &str) -> Result<i64> {
        let rows = self.sql_rows(&format!("SELECT count(*) FROM {index}"))?;
        rows.first()
            .and_then(|r| r[0].as_i64())
            .ok_or_else(|| anyhow!("no count in {rows:?}"))
    }

    /// The text a `GET` answers; fails on a non-success status.
    pub fn get_text(&self, path: &str) -> Result<String> {
        self.send_ok("GET", path, None, "")
    }

    /// Raw text of a SQL answer in `format`.
    pub fn sql_text(&self, query: &str, format: &str) -> Result<String> {
        let body = json!({ "query": query }).to_string();
        self.send_ok(
            "POST",
            &format!("/_sql?format={format}"),
            Some(&body),
            "application/json",
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts an Elasticsearch error body of this status and type.
pub fn assert_es_error(status: u16, body: &Value, want_status: u16, want_type: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], json!(want_status), "{body}");
    assert_eq!(body["error"]["type"], json!(want_type), "{body}");
    assert_eq!(body["error"]["root_cause"][0]["type"], json!(want_type), "{body}");
    assert!(
        body["error"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

/// A TCP proxy standing for the network in front of a node: while cut,
/// it still accepts connections but forwards nothing either way (packets
/// lost, as in a partition), and forwards again once healed.
pub struct Proxy {
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// Listens on `listen` and forwards to `target`.
    pub fn start(listen: &str, target: &str) -> Result<Proxy> {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let cut = Arc::new(AtomicBool::new(false));
        let target = target.to_string();
        let flag = Arc::clone(&cut);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let cut = Arc::clone(&flag);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match std::io::Read::read(&mut from, &mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                                        continue;
                                    }
                                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Ok(Proxy { cut })
    }

    /// Drops everything from now on.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// NDJSON of these lines.
fn ndjson(lines: &[Value]) -> String {
    let mut body = String::new();
    for l in lines {
        body.push_str(&l.to_string());
        body.push('\n');
    }
    body
}
