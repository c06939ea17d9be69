//! `qbench`: benchmarks that report Quidditch against a reference measured in
//! the same run on the same machine.

mod aggs;
mod corpus;
mod distributed;
mod flight;
mod ingest;
mod report;
mod results;
mod scan;
mod search;
mod tpch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The allocator of the `quidditch` binary, so that in-process measurements
/// match the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Quidditch's benchmark runner.
#[derive(Debug, Parser)]
#[command(name = "qbench", about)]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// docs/s of `quidditch load` into a running node versus a raw tantivy IndexWriter.
    Ingest(Common),
    /// A GROUP BY over the loaded logs through SQL versus tantivy's own aggregation.
    Scan(Common),
    /// The 14 DSL aggregation types versus tantivy's native aggregation of the same request.
    Aggs(Common),
    /// A large SELECT streamed to a pyarrow.flight client versus DataFusion in-process over Parquet.
    Flight(flight::FlightArgs),
    /// A term query with top-10 hits and a terms aggregation on 1 coordinator + 3 data nodes
    /// versus the embedded node.
    Distributed(Common),
    /// A query mix (term, match, phrase, bool, range, top 10 by score and by timestamp, count)
    /// through the HTTP DSL and Flight SQL at concurrency 1, 4 and 16 versus raw tantivy.
    Search(Common),
    /// `REPORT.md` and PNG charts of the latest results of every suite.
    Report(report::ReportArgs),
    /// The 22 TPC-H queries through Flight SQL, checked against DuckDB and timed against DuckDB
    /// and DataFusion over Parquet.
    Tpch(tpch::TpchArgs),
}

/// Options every suite shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Number of generated log documents.
    #[arg(long, default_value_t = 1_000_000)]
    pub docs: usize,
    /// Work directory (a temporary one when absent).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Where to write the JSON result.
    #[arg(long, default_value = "benchmarks/results")]
    pub out: PathBuf,
    /// Timed repetitions (rounds of both loads for ingest; scan, aggs; 20
    /// requests each for distributed).
    #[arg(long, default_value_t = 10)]
    pub iterations: usize,
    /// Fail unless every answer matches the reference (used by the smoke test).
    #[arg(long)]
    pub check: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().suite {
        Suite::Ingest(c) => ingest::run(&c),
        Suite::Scan(c) => scan::run(&c),
        Suite::Aggs(c) => aggs::run(&c),
        Suite::Flight(a) => flight::run(&a),
        Suite::Distributed(a) => distributed::run(&a),
        Suite::Search(c) => search::run(&c),
        Suite::Tpch(a) => tpch::run(&a),
        Suite::Report(a) => report::run(&a),
    }
}
