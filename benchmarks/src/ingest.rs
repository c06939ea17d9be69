//! `qbench ingest`: docs/s of `quidditch load` into a running embedded node
//! (HTTP `_bulk`, translog fsync per bulk, refresh at the end) versus a raw
//! tantivy `IndexWriter` with 2 indexing threads committing once, on the same
//! generated documents. Each round loads both (in turns first), and the
//! figures are the medians of the rounds, so that one slow moment of a
//! shared machine does not decide the ratio.

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
    pub raw_secs: f64,
    pub quidditch_secs: f64,
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

/// Generates the corpus and loads it into both systems, timing each load.
pub fn prepare(c: &Common) -> Result<Prepared> {
    let (tmp, dir) = work_dir(c.work_dir.as_deref())?;
    Ok(Prepared {
        _tmp: tmp,
        ..load_both(&dir, c.docs, true)?
    })
}

/// Loads the corpus of `docs` documents (generated once into `dir`) into
/// fresh directories of both systems, the raw writer first or not.
fn load_both(dir: &Path, docs: usize, raw_first: bool) -> Result<Prepared> {
    let ndjson = corpus::ndjson(dir, docs)?;
    let tantivy_dir = dir.join("tantivy");
    let quidditch_dir = dir.join("quidditch-data");
    for d in [&tantivy_dir, &quidditch_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    let (mut raw_secs, mut quidditch_secs) = (0.0, 0.0);
    for raw in [raw_first, !raw_first] {
        if raw {
            eprintln!("raw tantivy ingest");
            raw_secs = raw_ingest(&ndjson, &tantivy_dir)?;
        } else {
            eprintln!("quidditch load");
            quidditch_secs = quidditch_ingest(&ndjson, &quidditch_dir)?;
        }
    }
    Ok(Prepared {
        tantivy_dir,
        quidditch_dir,
        raw_secs,
        quidditch_secs,
        _tmp: None,
    })
}

pub fn run(c: &Common) -> Result<()> {
    let (_tmp, dir) = work_dir(c.work_dir.as_deref())?;
    let mut rounds = Vec::new();
    let mut last = None;
    for round in 0..c.iterations.max(1) {
        eprintln!("round {}", round + 1);
        let p = load_both(&dir, c.docs, round % 2 == 0)?;
        rounds.push(json!({
            "quidditch_docs_per_s": c.docs as f64 / p.quidditch_secs,
            "reference_docs_per_s": c.docs as f64 / p.raw_secs,
        }));
        last = Some(p);
    }
    let rate = |key: &str| crate::results::median(rounds.iter().filter_map(|r| r[key].as_f64()).collect());
    let (q_rate, raw_rate) = (rate("quidditch_docs_per_s"), rate("reference_docs_per_s"));
    println!(
        "ingest {} docs: quidditch load {:.0} docs/s, raw tantivy {:.0} docs/s, ratio {:.2}",
        c.docs,
        q_rate,
        raw_rate,
        q_rate / raw_rate
    );
    if let (true, Some(p)) = (c.check, last) {
        let count = crate::scan::quidditch_count(&p.quidditch_dir)?;
        if count != c.docs as u64 {
            bail!("quidditch holds {count} documents, expected {}", c.docs);
        }
    }
    crate::results::write(
        &c.out,
        "ingest",
        json!({
            "docs": c.docs,
            "quidditch_docs_per_s": q_rate,
            "reference": "raw tantivy IndexWriter, 2 indexing threads, one commit",
            "reference_docs_per_s": raw_rate,
            "ratio": q_rate / raw_rate,
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

fn quidditch_ingest(ndjson: &Path, data_dir: &Path) -> Result<f64> {
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
    let started = Instant::now();
    let status = Command::new(sibling_binary()?)
        .args(["load", "--quiet", "--index", "logs", "--url", &node.url])
        .arg(ndjson)
        .stdout(Stdio::null())
        .status()?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("quidditch load failed");
    }
    node.stop()?;
    Ok(secs)
}
