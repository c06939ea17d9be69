//! `quidditch load`: NDJSON, CSV and Parquet files into an index, in batches
//! written by parallel workers, with a progress bar. The batches go through
//! the `_bulk` API of a running node, or, with `--data-dir`, straight into
//! the data directory of a stopped one, in this process. Both take the same
//! durable write path: a batch is counted once it is in the shards'
//! translogs, fsynced.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use quidditch_index::index::DocWrite;
use quidditch_index::{Index, Indices, RefreshPolicy};
use serde_json::{Map, Value, json};

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
    /// Load into this data directory in this process instead of through a
    /// node (`--url` and the credentials are then not used). No node may be
    /// running on it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Take each document's `_id` from this field (a string or an integer,
    /// kept in the document; a dotted path reaches into objects), so that
    /// loading the same rows again replaces them instead of adding copies.
    /// A document without it is rejected.
    #[arg(long)]
    pub id_field: Option<String>,
    /// Documents per batch (bulk request).
    #[arg(long, default_value_t = 5000)]
    pub batch_size: usize,
    /// Batches in flight.
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
    /// Documents rejected (per-item errors).
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
    let Some(dir) = &args.data_dir else {
        let target = Target::Node {
            client: args.auth.http_client(Duration::from_secs(600))?,
            base: args.url.trim_end_matches('/').to_string(),
            index: args.index.clone(),
        };
        return load_into(args, &target);
    };
    let indices = Arc::new(Indices::open(dir).with_context(|| {
        format!(
            "opening data directory {} (if a node is using it, load through it with --url)",
            dir.display()
        )
    })?);
    // The index refreshes at its interval meanwhile, as on a node: its
    // segments stay small, and each refresh commits and trims the translog.
    let rt = crate::cli::runtime()?;
    let refresher = {
        let _entered = rt.enter();
        indices.spawn_refresher()
    };
    let loaded = indices
        .get_or_create(&args.index)
        .map_err(anyhow::Error::from)
        .and_then(|index| load_into(args, &Target::Local(index)));
    refresher.abort();
    // Every shard commits, whether the load finished or not: what was
    // acknowledged so far is kept either way.
    let closed = indices.close().context("committing the shards");
    match (loaded, closed) {
        (Ok(stats), closed) => closed.map(|()| stats),
        (Err(err), Ok(())) => Err(err),
        (Err(err), Err(closed)) => Err(err.context(format!("{closed:#}"))),
    }
}

/// Where the batches go.
enum Target {
    /// A running node's `_bulk` API.
    Node {
        client: reqwest::blocking::Client,
        /// The node's URL.
        base: String,
        index: String,
    },
    /// An index of a data directory opened by this process.
    Local(Arc<Index>),
}

impl Target {
    /// Writes one batch of documents, each with its id or none (generated);
    /// returns how many were rejected, with the first few reasons.
    fn write(&self, docs: Vec<(Option<String>, String)>) -> anyhow::Result<(u64, Vec<String>)> {
        match self {
            Target::Node { client, base, index } => {
                let mut body =
                    String::with_capacity(docs.iter().map(|(_, d)| d.len() + ACTION.len() + 1).sum());
                for (id, doc) in &docs {
                    match id {
                        Some(id) => {
                            body.push_str(&json!({"index": {"_id": id}}).to_string());
                            body.push('\n');
                        }
                        None => body.push_str(ACTION),
                    }
                    body.push_str(doc);
                    body.push('\n');
                }
                // Only the failed items come back (as Logstash asks
                // Elasticsearch): a response does not repeat the whole batch.
                let url = format!("{base}/{index}/_bulk?filter_path=errors,items.*.error");
                send_bulk(client, &url, body)
            }
            Target::Local(index) => {
                let writes = docs
                    .into_iter()
                    .map(|(id, doc)| DocWrite::Index {
                        id,
                        source: Arc::from(doc),
                        create: false,
                        condition: None,
                    })
                    .collect();
                let batch = index.write(writes, RefreshPolicy::None)?;
                let errors = batch.items.iter().filter_map(|(_, r)| r.as_ref().err());
                let failed = errors.clone().count() as u64;
                Ok((
                    failed,
                    errors.take(MAX_REASONS).map(ToString::to_string).collect(),
                ))
            }
        }
    }

    /// Makes everything written searchable.
    fn refresh(&self) -> anyhow::Result<()> {
        match self {
            Target::Node { client, base, index } => {
                let url = format!("{base}/{index}/_refresh");
                let resp = client.post(&url).send().context("refreshing the index")?;
                let status = resp.status();
                if !status.is_success() {
                    bail!("refresh failed with {status}: {}", resp.text()?);
                }
            }
            Target::Local(index) => index.refresh()?,
        }
        Ok(())
    }
}

/// Each document with its id: the value of `id_field` (a string or an
/// integer), or none (generated) without one. Documents without a usable
/// value are left out, each with the reason.
fn with_ids(docs: Vec<String>, id_field: Option<&str>) -> (Vec<(Option<String>, String)>, Vec<String>) {
    let Some(field) = id_field else {
        return (docs.into_iter().map(|doc| (None, doc)).collect(), Vec::new());
    };
    let mut out = Vec::with_capacity(docs.len());
    let mut rejected = Vec::new();
    for doc in docs {
        let preview = || doc.chars().take(200).collect::<String>();
        let Ok(value) = serde_json::from_str::<Value>(&doc) else {
            rejected.push(format!("document is not JSON: {}", preview()));
            continue;
        };
        let id = field
            .split('.')
            .try_fold(&value, |v, key| v.get(key))
            .and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                _ => None,
            });
        match id {
            Some(id) => out.push((Some(id), doc)),
            None => rejected.push(format!(
                "document has no string or integer [{field}] to take its _id from: {}",
                preview()
            )),
        }
    }
    (out, rejected)
}

/// The action line before each document of a bulk body.
const ACTION: &str = "{\"index\":{}}\n";
/// Rejection reasons kept per batch and printed at the end.
const MAX_REASONS: usize = 5;

/// Documents written and rejected so far, with the first reasons.
#[derive(Default)]
struct Totals {
    docs: u64,
    failed: u64,
    reasons: Vec<String>,
}

/// Reads the files into batches that `concurrency` workers write to the
/// target, then refreshes it.
fn load_into(args: &LoadArgs, target: &Target) -> anyhow::Result<LoadStats> {
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
    let (tx, rx) = sync_channel::<Vec<String>>(args.concurrency * 2);
    // Only the workers hold the receiver: once they have all stopped (on
    // an error), the reader's next send fails instead of waiting for ever.
    let rx = Arc::new(Mutex::new(rx));
    let totals = Mutex::new(Totals::default());
    let result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let (rx, totals, bar) = (Arc::clone(&rx), &totals, &bar);
                let id_field = args.id_field.as_deref();
                scope.spawn(move || write_loop(target, id_field, &rx, totals, bar))
            })
            .collect();
        drop(rx);
        let produced = produce(args, tx);
        let mut first_err = produced.err();
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(anyhow::anyhow!("a load worker panicked"));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    });
    bar.finish_and_clear();
    result?;
    target.refresh()?;
    let totals = totals.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))?;
    for reason in totals.reasons.iter().take(MAX_REASONS) {
        eprintln!("rejected: {reason}");
    }
    Ok(LoadStats {
        docs: totals.docs,
        failed: totals.failed,
        elapsed: started.elapsed(),
    })
}

/// Whether a bulk response reports failed items.
#[derive(serde::Deserialize)]
struct BulkHead {
    errors: bool,
}

/// Whether bulk response `text` reports failed items. Elasticsearch and
/// Quidditch write `errors` before `items`: the fields before `items` are
/// read alone when they hold it, else the whole response.
fn reports_errors(text: &str) -> anyhow::Result<bool> {
    let head = text
        .find("\"items\"")
        .map(|at| format!("{}}}", text[..at].trim_end().trim_end_matches(',')))
        .and_then(|head| serde_json::from_str::<BulkHead>(&head).ok());
    match head {
        Some(head) => Ok(head.errors),
        None => Ok(serde_json::from_str::<BulkHead>(text)
            .context("bulk response is not JSON")?
            .errors),
    }
}

fn write_loop(
    target: &Target,
    id_field: Option<&str>,
    rx: &Mutex<Receiver<Vec<String>>>,
    totals: &Mutex<Totals>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    loop {
        let next = rx.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.recv();
        let Ok(docs) = next else { return Ok(()) };
        let n = docs.len() as u64;
        let (docs, mut reasons) = with_ids(docs, id_field);
        let mut failed = reasons.len() as u64;
        if !docs.is_empty() {
            let (write_failed, write_reasons) = target.write(docs)?;
            failed += write_failed;
            reasons.extend(write_reasons);
        }
        let mut t = totals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        t.docs += n - failed;
        t.failed += failed;
        t.reasons.extend(reasons.into_iter().take(MAX_REASONS));
        bar.inc(n);
    }
}

/// Sends one bulk body; returns how many items failed, with the first few
/// reasons.
fn send_bulk(
    client: &reqwest::blocking::Client,
    url: &str,
    body: String,
) -> anyhow::Result<(u64, Vec<String>)> {
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
    // The items are read only when some failed (a node sends only those,
    // and a server that ignores the filter sends them all).
    let mut failed = 0u64;
    let mut reasons = Vec::new();
    if reports_errors(&text)? {
        let v: Value = serde_json::from_str(&text).context("bulk response is not JSON")?;
        for item in v.get("items").and_then(Value::as_array).into_iter().flatten() {
            if let Some(err) = item
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|i| i.get("error"))
            {
                failed += 1;
                if reasons.len() < MAX_REASONS {
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
    Ok((failed, reasons))
}

/// Reads every file and sends batches of `batch_size` documents.
fn produce(args: &LoadArgs, tx: SyncSender<Vec<String>>) -> anyhow::Result<()> {
    let mut batch = Batch {
        docs: Vec::with_capacity(args.batch_size),
        size: args.batch_size,
        tx,
    };
    for file in &args.files {
        match detect_format(file)? {
            Format::Ndjson => {
                let reader =
                    BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
                for line in reader.lines() {
                    // As the `_bulk` API reads a source line: without the
                    // white space around it.
                    let line = line?;
                    let doc = line.trim();
                    if !doc.is_empty() {
                        batch.push(match doc.len() == line.len() {
                            true => line,
                            false => doc.to_string(),
                        })?;
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
                    batch.push(Value::Object(obj).to_string())?;
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
                        batch.push(line.to_string())?;
                    }
                }
            }
        }
    }
    batch.flush()
}

struct Batch {
    docs: Vec<String>,
    size: usize,
    tx: SyncSender<Vec<String>>,
}

impl Batch {
    fn push(&mut self, doc: String) -> anyhow::Result<()> {
        self.docs.push(doc);
        if self.docs.len() >= self.size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.docs.is_empty() {
            return Ok(());
        }
        let docs = std::mem::replace(&mut self.docs, Vec::with_capacity(self.size));
        self.tx
            .send(docs)
            .map_err(|_| anyhow::anyhow!("load workers stopped"))?;
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

#[cfg(test)]
mod tests {
    use super::reports_errors;

    #[test]
    fn reports_errors_reads_the_flag_before_or_after_the_items() -> anyhow::Result<()> {
        let failed_item =
            r#"{"index":{"_id":"1","status":400,"error":{"reason":"\"items\" is not a field"}}}"#;
        for (text, errors) in [
            (
                r#"{"took":3,"errors":false,"items":[{"index":{"status":201}}]}"#.to_string(),
                false,
            ),
            (
                format!(r#"{{"errors":true,"took":3,"items":[{failed_item}]}}"#),
                true,
            ),
            (
                format!(r#"{{"items":[{failed_item}],"took":3,"errors":true}}"#),
                true,
            ),
            (
                r#"{"items":[{"index":{"status":201}}],"errors":false}"#.to_string(),
                false,
            ),
            // The text "items" before the key, and the fields pretty-printed.
            (
                format!(r#"{{"note":"items","errors":true,"items":[{failed_item}]}}"#),
                true,
            ),
            (
                "{\n  \"took\" : 3,\n  \"ingest_took\" : 0,\n  \"errors\" : false,\n  \"items\" : [ ]\n}"
                    .to_string(),
                false,
            ),
        ] {
            assert_eq!(reports_errors(&text)?, errors, "{text}");
        }
        assert!(reports_errors(r#"{"took":3,"items":[]"#).is_err());
        assert!(reports_errors("not json").is_err());
        Ok(())
    }
}
