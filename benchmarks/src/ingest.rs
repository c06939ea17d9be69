//! `qbench ingest`: docs/s of `quidditch load` into a running embedded node
//! (HTTP `_bulk`, translog fsync per bulk, refresh every second and at the
//! end) and of `quidditch load --data-dir` into a stopped node's data
//! directory (the same write path in the loading process, without HTTP),
//! versus a raw tantivy `IndexWriter` with 2 indexing threads committing
//! once, on the same generated documents. Each round runs the three loads
//! (each first in turn), and the figures are the medians of the rounds, so
//! that one slow moment of a shared machine does not decide the ratios.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, INDEXED, IndexRecordOption, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::{Index, TantivyDocument};

use crate::Common;
use crate::corpus;

/// Shards of the benchmark index: DataFusion runs one partition per shard,
/// and this machine has 2 cores.
pub const SHARDS: u32 = 2;
/// Memory budget of the raw tantivy writer (the same as a Quidditch shard's).
const WRITER_MEMORY: usize = 128 << 20;

/// Paths of a prepared benchmark work directory.
pub struct Prepared {
    pub tantivy_dir: PathBuf,
    pub quidditch_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// The work directory: the given one, or a temporary one removed with the guard.
pub fn work_dir(given: Option<&Path>) -> Result<(Option<tempfile::TempDir>, PathBuf)> {
    match given {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            Ok((None, d.to_path_buf()))
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("qbench-")
                .tempdir_in(std::env::temp_dir())?;
            let p = t.path().to_path_buf();
            Ok((Some(t), p))
        }
    }
}

/// Generates the corpus and loads it into both systems (the node through
/// its `_bulk` API).
pub fn prepare(c: &Common) -> Result<Prepared> {
    let (tmp, dir) = work_dir(c.work_dir.as_deref())?;
    load(&dir, c.docs, &[Loader::Raw, Loader::Node])?;
    Ok(Prepared {
        tantivy_dir: dir.join(Loader::Raw.dir_name()),
        quidditch_dir: dir.join(Loader::Node.dir_name()),
        _tmp: tmp,
    })
}

/// The loads that the suite times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loader {
    /// A raw tantivy `IndexWriter`.
    Raw,
    /// `quidditch load` through a running node's `_bulk` API.
    Node,
    /// `quidditch load --data-dir` into a stopped node's data directory.
    DataDir,
}

impl Loader {
    fn dir_name(self) -> &'static str {
        match self {
            Loader::Raw => "tantivy",
            Loader::Node => "quidditch-data",
            Loader::DataDir => "quidditch-local",
        }
    }
}

/// Loads the corpus of `docs` documents (generated once into `dir`) with
/// each loader in turn, into a fresh directory each; returns the seconds
/// each took.
fn load(dir: &Path, docs: usize, loaders: &[Loader]) -> Result<Vec<f64>> {
    let ndjson = corpus::ndjson(dir, docs)?;
    let mut secs = Vec::new();
    for loader in loaders {
        let target = dir.join(loader.dir_name());
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        eprintln!("{loader:?}");
        secs.push(match loader {
            Loader::Raw => raw_ingest(&ndjson, &target)?,
            Loader::Node => quidditch_ingest(&ndjson, &target)?,
            Loader::DataDir => local_ingest(&ndjson, &target)?,
        });
    }
    Ok(secs)
}

pub fn run(c: &Common) -> Result<()> {
    let (_tmp, dir) = work_dir(c.work_dir.as_deref())?;
    let mut rounds = Vec::new();
    for round in 0..c.iterations.max(1) {
        eprintln!("round {}", round + 1);
        // Each loader goes first, second and last in turn.
        let mut order = [Loader::Raw, Loader::Node, Loader::DataDir];
        order.rotate_left(round % 3);
        let secs = load(&dir, c.docs, &order)?;
        let rate = |loader| {
            order
                .iter()
                .zip(&secs)
                .find(|(l, _)| **l == loader)
                .map(|(_, s)| c.docs as f64 / s)
                .context("a load of the round was not timed")
        };
        rounds.push(json!({
            "quidditch_docs_per_s": rate(Loader::Node)?,
            "quidditch_data_dir_docs_per_s": rate(Loader::DataDir)?,
            "reference_docs_per_s": rate(Loader::Raw)?,
        }));
    }
    let rate = |key: &str| crate::results::median(rounds.iter().filter_map(|r| r[key].as_f64()).collect());
    let (node, data_dir, raw) = (
        rate("quidditch_docs_per_s"),
        rate("quidditch_data_dir_docs_per_s"),
        rate("reference_docs_per_s"),
    );
    println!(
        "ingest {} docs: raw tantivy {raw:.0} docs/s; quidditch load through a node {node:.0} docs/s, \
         ratio {:.2}; quidditch load --data-dir {data_dir:.0} docs/s, ratio {:.2}",
        c.docs,
        node / raw,
        data_dir / raw
    );
    if c.check {
        for loader in [Loader::Node, Loader::DataDir] {
            let count = crate::scan::quidditch_count(&dir.join(loader.dir_name()))?;
            if count != c.docs as u64 {
                bail!(
                    "{loader:?}: quidditch holds {count} documents, expected {}",
                    c.docs
                );
            }
        }
    }
    crate::results::write(
        &c.out,
        "ingest",
        json!({
            "docs": c.docs,
            "quidditch_docs_per_s": node,
            "quidditch_data_dir_docs_per_s": data_dir,
            "reference": "raw tantivy IndexWriter, 2 indexing threads, one commit",
            "reference_docs_per_s": raw,
            "ratio": node / raw,
            "data_dir_ratio": data_dir / raw,
            "rounds": rounds,
        }),
    )
}

/// The keyword fields of the corpus.
const KEYWORDS: [&str; 5] = ["level", "service", "host", "method", "path"];

/// The schema a tantivy user would write for these documents.
pub fn raw_schema() -> Schema {
    let mut b = Schema::builder();
    b.add_date_field(
        "@timestamp",
        DateOptions::from(FAST | INDEXED).set_precision(DateTimePrecision::Milliseconds),
    );
    for kw in KEYWORDS {
        b.add_text_field(kw, STRING | FAST);
    }
    b.add_i64_field("status", FAST | INDEXED);
    b.add_i64_field("bytes", FAST | INDEXED);
    b.add_f64_field("latency_ms", FAST | INDEXED);
    // Scored as Quidditch scores text: BM25 without length normalization
    // (a shard keeps its text in one tantivy JSON field, which has no field
    // norms), so that the search suite can compare scores.
    b.add_text_field(
        "message",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_index_option(IndexRecordOption::WithFreqsAndPositions)
                .set_fieldnorms(false),
        ),
    );
    b.add_text_field("_source", STORED);
    b.build()
}

fn raw_ingest(ndjson: &Path, dir: &Path) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let schema = raw_schema();
    let index = Index::create_in_dir(dir, schema.clone())?;
    let f = |n: &str| schema.get_field(n);
    let keywords = KEYWORDS.iter().map(|n| f(n)).collect::<Result<Vec<_>, _>>()?;
    let (ts, status, bytes, latency, message, source) = (
        f("@timestamp")?,
        f("status")?,
        f("bytes")?,
        f("latency_ms")?,
        f("message")?,
        f("_source")?,
    );
    let started = Instant::now();
    let mut writer = index.writer_with_num_threads::<TantivyDocument>(2, WRITER_MEMORY)?;
    for line in BufReader::new(std::fs::File::open(ndjson)?).lines() {
        let line = line?;
        let v: Value = serde_json::from_str(&line)?;
        let mut doc = TantivyDocument::new();
        doc.add_date(
            ts,
            tantivy::DateTime::from_timestamp_millis(v["@timestamp"].as_i64().unwrap_or_default()),
        );
        for (name, field) in KEYWORDS.iter().zip(&keywords) {
            doc.add_text(*field, v[name].as_str().unwrap_or_default());
        }
        doc.add_i64(status, v["status"].as_i64().unwrap_or_default());
        doc.add_i64(bytes, v["bytes"].as_i64().unwrap_or_default());
        doc.add_f64(latency, v["latency_ms"].as_f64().unwrap_or_default());
        doc.add_text(message, v["message"].as_str().unwrap_or_default());
        doc.add_text(source, &line);
        writer.add_document(doc)?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    Ok(started.elapsed().as_secs_f64())
}

/// The `quidditch` binary next to this one.
pub fn sibling_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("quidditch");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release --bin quidditch`",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running node, killed on drop.
pub struct NodeProcess {
    child: Child,
    /// Its HTTP URL.
    pub url: String,
    /// Its Flight address (`host:port`).
    pub flight: String,
}

impl NodeProcess {
    /// Starts `quidditch serve` on free ports over this data directory.
    pub fn start(data_dir: &Path) -> Result<NodeProcess> {
        NodeProcess::start_with(data_dir, &[])
    }

    /// Starts `quidditch serve` on free ports with more flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Result<NodeProcess> {
        let mut child = Command::new(sibling_binary()?)
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
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let ready: Value = serde_json::from_str(&line).with_context(|| format!("ready line: {line}"))?;
        let http = ready["http"].as_str().context("no http address")?;
        let flight = ready["flight"].as_str().context("no flight address")?;
        Ok(NodeProcess {
            child,
            url: format!("http://{http}"),
            flight: flight.to_string(),
        })
    }

    /// SIGTERM (every shard committed), then waits for the exit.
    pub fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("node did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a node over `data_dir` and creates the benchmark index in it.
fn create_index(data_dir: &Path) -> Result<NodeProcess> {
    let node = NodeProcess::start(data_dir)?;
    let mut settings = corpus::mapping();
    settings["settings"] = json!({"number_of_shards": SHARDS});
    let status = Command::new("curl")
        .args([
            "-sf",
            "-XPUT",
            &format!("{}/logs", node.url),
            "-H",
            "content-type: application/json",
            "-d",
        ])
        .arg(settings.to_string())
        .stdout(Stdio::null())
        .status()
        .context("creating the index with curl")?;
    if !status.success() {
        bail!("creating the index failed");
    }
    Ok(node)
}

/// Times `quidditch load` with these target arguments.
fn timed_load(ndjson: &Path, target: &[&OsStr]) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new(sibling_binary()?)
        .args(["load", "--quiet", "--index", "logs"])
        .args(target)
        .arg(ndjson)
        .stdout(Stdio::null())
        .status()?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("quidditch load failed");
    }
    Ok(secs)
}

/// `quidditch load` through a running node.
fn quidditch_ingest(ndjson: &Path, data_dir: &Path) -> Result<f64> {
    let node = create_index(data_dir)?;
    let secs = timed_load(ndjson, &["--url".as_ref(), node.url.as_ref()])?;
    node.stop()?;
    Ok(secs)
}

/// `quidditch load --data-dir` into the directory of a stopped node.
fn local_ingest(ndjson: &Path, data_dir: &Path) -> Result<f64> {
    create_index(data_dir)?.stop()?;
    timed_load(ndjson, &["--data-dir".as_ref(), data_dir.as_os_str()])
}
