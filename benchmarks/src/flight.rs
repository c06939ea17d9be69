//! `qbench flight`: streaming a large `SELECT` to a `pyarrow.flight` client
//! (a Python subprocess, as users run it) versus DataFusion running the same
//! query in-process over Parquet written from the same record batches.
//!
//! The rows are generated deterministically, loaded into a node with Flight
//! `DoPut`, and reused by later runs on the same work directory. The client
//! counts rows and sums a column, so the answer is checked, not just timed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ArrowWriter;
use serde_json::{Value, json};

use crate::ingest::NodeProcess;
use crate::results::median;

const INDEX: &str = "flightbench";
const BATCH: usize = 65_536;
const TAGS: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
const COLUMNS: &str = "id, k, v, tag, ts";

/// `qbench flight` options.
#[derive(Debug, Clone, clap::Args)]
pub struct FlightArgs {
    /// Rows to generate and stream.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: usize,
    /// Work directory (kept between runs: the loaded node is reused).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Where to write the JSON result.
    #[arg(long, default_value = "benchmarks/results")]
    pub out: PathBuf,
    /// Timed repetitions of each side.
    #[arg(long, default_value_t = 3)]
    pub iterations: usize,
    /// Python interpreter with pyarrow.
    #[arg(long, env = "QBENCH_PYTHON", default_value = "python3")]
    pub python: String,
    /// Fail unless both sides return every row with the expected sum.
    #[arg(long)]
    pub check: bool,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("_id", DataType::Utf8, false),
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
        Field::new("tag", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

/// Rows `[start, start + len)`.
fn batch(start: usize, len: usize) -> Result<RecordBatch> {
    let ids: Vec<i64> = (start..start + len).map(|i| i as i64).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(ids.iter().map(|i| i.to_string()))),
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 1000))),
        Arc::new(Float64Array::from_iter_values(
            ids.iter().map(|i| (*i as f64) * 0.25),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| TAGS[(*i as usize) % TAGS.len()]),
        )),
        Arc::new(TimestampMillisecondArray::from_iter_values(
            ids.iter().map(|i| 1_700_000_000_000 + i * 1000),
        )),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

fn batches(rows: usize) -> impl Iterator<Item = Result<RecordBatch>> {
    (0..rows)
        .step_by(BATCH)
        .map(move |start| batch(start, BATCH.min(rows - start)))
}

/// Sum of `k` over all rows.
fn expected_k_sum(rows: usize) -> i64 {
    (0..rows as i64).map(|i| i % 1000).sum()
}

fn write_parquet(path: &Path, rows: usize) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema(), None)?;
    for b in batches(rows) {
        writer.write(&b?)?;
    }
    writer.close()?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

async fn load(flight_addr: &str, rows: usize) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{flight_addr}"))?
        .connect()
        .await?;
    let mut client = FlightClient::new(channel);
    let data = futures::stream::iter(batches(rows))
        .map(|b| b.map_err(|e| arrow_flight::error::FlightError::ExternalError(e.into())));
    let encoded = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![INDEX.to_string()])))
        .build(data);
    let results: Vec<_> = client.do_put(encoded).await?.try_collect().await?;
    let summary: Value = serde_json::from_slice(&results.first().context("no put result")?.app_metadata)?;
    if summary["written"].as_u64() != Some(rows as u64) {
        bail!("load wrote {summary}, expected {rows} rows");
    }
    Ok(())
}

const CLIENT: &str = r#"
import json, sys, time
import pyarrow.compute as pc
import pyarrow.flight as flight
addr, sql, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = flight.connect("grpc://" + addr)
runs = []
for _ in range(iterations):
    started = time.perf_counter()
    reader = client.do_get(flight.Ticket(json.dumps({"sql": sql})))
    rows = nbytes = k_sum = 0
    for chunk in reader:
        rows += chunk.data.num_rows
        nbytes += chunk.data.nbytes
        k_sum += pc.sum(chunk.data.column("k")).as_py() or 0
    runs.append({"seconds": time.perf_counter() - started, "rows": rows, "bytes": nbytes, "k_sum": k_sum})
print(json.dumps(runs))
"#;

pub fn run(a: &FlightArgs) -> Result<()> {
    let tmp;
    let work = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let data_dir = work.join(format!("flight-node-{}", a.rows));
    let parquet = work.join(format!("flight-{}.parquet", a.rows));
    std::fs::create_dir_all(&work)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let node = NodeProcess::start(&data_dir)?;
    let loaded = indexed_count(&node.url)?;
    if loaded != Some(a.rows as u64) {
        if loaded.is_some() {
            bail!("{} holds another data set: remove it", data_dir.display());
        }
        let started = Instant::now();
        rt.block_on(load(&node.flight, a.rows))?;
        eprintln!(
            "loaded {} rows over Flight DoPut in {:.1} s",
            a.rows,
            started.elapsed().as_secs_f64()
        );
    }
    if !parquet.exists() {
        write_parquet(&parquet, a.rows)?;
    }
    let sql = format!("SELECT {COLUMNS} FROM {INDEX}");
    let out = Command::new(&a.python)
        .args(["-c", CLIENT, &node.flight, &sql, &a.iterations.to_string()])
        .output()
        .with_context(|| format!("running {}", a.python))?;
    if !out.status.success() {
        bail!("pyarrow client failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    node.stop()?;

    let ctx = SessionContext::new();
    rt.block_on(ctx.register_parquet(
        INDEX,
        parquet.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    ))?;
    let mut reference = Vec::new();
    for _ in 0..a.iterations {
        let started = Instant::now();
        let (rows, k_sum) = rt.block_on(async {
            let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
            let (mut rows, mut k_sum) = (0usize, 0i64);
            while let Some(b) = stream.try_next().await? {
                rows += b.num_rows();
                let k = b.column_by_name("k").context("no k column")?;
                let k = k
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .context("k is not Int64")?;
                k_sum += arrow::compute::sum(k).unwrap_or(0);
            }
            anyhow::Ok((rows, k_sum))
        })?;
        reference.push((started.elapsed().as_secs_f64(), rows, k_sum));
    }

    let expected = expected_k_sum(a.rows);
    let quidditch_ok = runs
        .iter()
        .all(|r| r["rows"].as_u64() == Some(a.rows as u64) && r["k_sum"].as_i64() == Some(expected));
    let reference_ok = reference
        .iter()
        .all(|(_, rows, k)| *rows == a.rows && *k == expected);
    let q_s = median(runs.iter().filter_map(|r| r["seconds"].as_f64()).collect());
    let r_s = median(reference.iter().map(|(s, _, _)| *s).collect());
    let bytes = runs.first().and_then(|r| r["bytes"].as_f64()).unwrap_or(0.0);
    println!(
        "flight `{sql}` ({} rows, {:.0} MB as Arrow): pyarrow.flight {q_s:.2} s ({:.2} M rows/s, {:.0} MB/s), DataFusion in-process over Parquet {r_s:.2} s ({:.2} M rows/s), ratio {:.2}, answers {}",
        a.rows,
        bytes / 1e6,
        a.rows as f64 / q_s / 1e6,
        bytes / q_s / 1e6,
        a.rows as f64 / r_s / 1e6,
        q_s / r_s,
        if quidditch_ok && reference_ok {
            "match"
        } else {
            "DIFFER"
        }
    );
    if a.check && !(quidditch_ok && reference_ok) {
        bail!(
            "answers differ: quidditch {runs:?}, reference {reference:?}, expected {} rows with k sum {expected}",
            a.rows
        );
    }
    crate::results::write(
        &a.out,
        "flight",
        json!({
            "rows": a.rows,
            "query": sql,
            "arrow_bytes": bytes,
            "quidditch": "pyarrow.flight DoGet of a SQL ticket from a release node (Python client)",
            "quidditch_s_median": q_s,
            "quidditch_rows_per_s": a.rows as f64 / q_s,
            "quidditch_mb_per_s": bytes / q_s / 1e6,
            "reference": "DataFusion SessionContext over Parquet written from the same batches, in-process",
            "reference_s_median": r_s,
            "reference_rows_per_s": a.rows as f64 / r_s,
            "ratio": q_s / r_s,
            "iterations": a.iterations,
            "answers_match": quidditch_ok && reference_ok,
        }),
    )
}

/// The document count of the benchmark index, or `None` when it is absent.
fn indexed_count(url: &str) -> Result<Option<u64>> {
    let out = Command::new("curl")
        .args(["-s", &format!("{url}/{INDEX}/_count")])
        .output()
        .context("curl")?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Ok(v["count"].as_u64())
}
