//! `quidditch load`: NDJSON, CSV and Parquet files into an index, through the
//! `_bulk` API of a running node (the same durable ingest path as any
//! client), in batches sent by parallel workers, with a progress bar.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

/// `quidditch load` options.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Target index (created with dynamic mapping when missing).
    #[arg(long)]
    pub index: String,
    /// Files to load: `.ndjson`/`.json`/`.jsonl`, `.csv`, `.parquet`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// URL of the node.
    #[arg(long, env = "QUIDDITCH_URL", default_value = "http://127.0.0.1:9200")]
    pub url: String,
    /// Documents per bulk request.
    #[arg(long, default_value_t = 5000)]
    pub batch_size: usize,
    /// Bulk requests in flight.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Credentials for a node that requires them.
    #[command(flatten)]
    pub auth: crate::client::ClientAuth,
}

/// Counts of a finished load.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadStats {
    /// Documents acknowledged.
    pub docs: u64,
    /// Documents rejected by the node (per-item errors).
    pub failed: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs the command and prints a summary.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let stats = load(&args)?;
    let rate = stats.docs as f64 / stats.elapsed.as_secs_f64().max(1e-9);
    println!(
        "loaded {} documents into [{}] in {:.2}s ({:.0} docs/s), {} failed",
        stats.docs,
        args.index,
        stats.elapsed.as_secs_f64(),
        rate,
        stats.failed
    );
    if stats.failed > 0 {
        bail!("{} documents were rejected", stats.failed);
    }
    Ok(())
}

/// Loads the files; returns the counts.
pub fn load(args: &LoadArgs) -> anyhow::Result<LoadStats> {
    if args.batch_size == 0 || args.concurrency == 0 {
        bail!("--batch-size and --concurrency must be positive");
    }
    let client = args.auth.http_client(Duration::from_secs(600))?;
    let started = Instant::now();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {human_pos} docs, {per_sec} [{elapsed_precise}] {msg}",
    )?);
    bar.enable_steady_tick(Duration::from_millis(200));
    let url = format!("{}/{}/_bulk", args.url.trim_end_matches('/'), args.index);
    let (tx, rx) = sync_channel::<(String, u64)>(args.concurrency * 2);
    let rx = Arc::new(Mutex::new(rx));
    let totals = Arc::new(Mutex::new((0u64, 0u64, Vec::<String>::new())));
    let result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut workers = Vec::new();
        for _ in 0..args.concurrency {
            let rx = Arc::clone(&rx);
            let totals = Arc::clone(&totals);
            let url = url.clone();
            let bar = bar.clone();
            let client = &client;
            workers.push(scope.spawn(move || send_loop(&url, &rx, &totals, &bar, client)));
        }
        let produced = produce(args, tx);
        let mut first_err = produced.err();
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(anyhow::anyhow!("a bulk worker panicked"));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    });
    bar.finish_and_clear();
    result?;
    client
        .post(format!(
            "{}/{}/_refresh",
            args.url.trim_end_matches('/'),
            args.index
        ))
        .send()
        .context("refreshing the index")?;
    let (docs, failed, reasons) =
        std::mem::take(&mut *totals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    for reason in reasons.iter().take(5) {
        eprintln!("rejected: {reason}");
    }
    Ok(LoadStats {
        docs,
        failed,
        elapsed: started.elapsed(),
    })
}

type Totals = Mutex<(u64, u64, Vec<String>)>;

/// Whether a bulk response reports failed items.
#[derive(serde::Deserialize)]
struct BulkHead {
    errors: bool,
}

fn send_loop(
    url: &str,
    rx: &Mutex<Receiver<(String, u64)>>,
    totals: &Totals,
    bar: &ProgressBar,
    client: &reqwest::blocking::Client,
) -> anyhow::Result<()> {
    loop {
        let next = rx.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.recv();
        let Ok((body, n)) = next else { return Ok(()) };
        let resp = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .with_context(|| format!("sending a bulk request to {url}"))?;
        let status = resp.status();
        let text = resp.text()?;
        if !status.is_success() {
            bail!("bulk request failed with {status}: {text}");
        }
        // The items are read only when some failed: a response of thousands
        // of successes is skimmed, not built into a tree.
        let head: BulkHead = serde_json::from_str(&text).context("bulk response is not JSON")?;
        let mut failed = 0u64;
        let mut reasons = Vec::new();
        if head.errors {
            let v: Value = serde_json::from_str(&text).context("bulk response is not JSON")?;
            for item in v.get("items").and_then(Value::as_array).into_iter().flatten() {
                if let Some(err) = item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|i| i.get("error"))
                {
                    failed += 1;
                    if reasons.len() < 5 {
                        reasons.push(
                            err.get("reason")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                        );
                    }
                }
            }
        }
        let mut t = totals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        t.0 += n - failed;
        t.1 += failed;
        t.2.extend(reasons);
        bar.inc(n);
    }
}

/// Reads every file and sends bulk bodies of `batch_size` documents.
fn produce(args: &LoadArgs, tx: SyncSender<(String, u64)>) -> anyhow::Result<()> {
    let mut batch = Batch {
        body: String::new(),
        n: 0,
        size: args.batch_size,
        tx,
    };
    for file in &args.files {
        match detect_format(file)? {
            Format::Ndjson => {
                let reader =
                    BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
                for line in reader.lines() {
                    let line = line?;
                    if !line.trim().is_empty() {
                        batch.push(&line)?;
                    }
                }
            }
            Format::Csv => {
                let mut reader =
                    csv::Reader::from_path(file).with_context(|| format!("opening {}", file.display()))?;
                let headers = reader.headers()?.clone();
                for record in reader.records() {
                    let record = record?;
                    let mut obj = Map::new();
                    for (h, v) in headers.iter().zip(record.iter()) {
                        if !v.is_empty() {
                            obj.insert(h.to_string(), csv_value(v));
                        }
                    }
                    batch.push(&Value::Object(obj).to_string())?;
                }
            }
            Format::Parquet => {
                let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?.build()?;
                for rb in reader {
                    let rb = rb?;
                    let mut buf = Vec::new();
                    {
                        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                        w.write(&rb)?;
                        w.finish()?;
                    }
                    for line in String::from_utf8(buf)?.lines() {
                        batch.push(line)?;
                    }
                }
            }
        }
    }
    batch.flush()
}

struct Batch {
    body: String,
    n: u64,
    size: usize,
    tx: SyncSender<(String, u64)>,
}

impl Batch {
    fn push(&mut self, doc: &str) -> anyhow::Result<()> {
        self.body.push_str("{\"index\":{}}\n");
        self.body.push_str(doc);
        self.body.push('\n');
        self.n += 1;
        if self.n as usize >= self.size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.n == 0 {
            return Ok(());
        }
        let body = std::mem::take(&mut self.body);
        self.tx
            .send((body, self.n))
            .map_err(|_| anyhow::anyhow!("bulk workers stopped"))?;
        self.n = 0;
        Ok(())
    }
}

enum Format {
    Ndjson,
    Csv,
    Parquet,
}

fn detect_format(path: &Path) -> anyhow::Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    Ok(match ext.as_str() {
        "ndjson" | "json" | "jsonl" => Format::Ndjson,
        "csv" => Format::Csv,
        "parquet" => Format::Parquet,
        _ => bail!(
            "cannot tell the format of {} (use .ndjson, .csv or .parquet)",
            path.display()
        ),
    })
}

/// A CSV cell as a typed JSON value, so dynamic mapping sees numbers and booleans.
fn csv_value(v: &str) -> Value {
    if let Ok(n) = v.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(v.to_string()),
    }
}
