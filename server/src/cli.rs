//! The `quidditch` command line: `serve`, `sql` and `load`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_DATA_DIR, ServeArgs};
use crate::load::LoadArgs;

/// Quidditch: a distributed search and analytics engine.
#[derive(Debug, Parser)]
#[command(name = "quidditch", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the embedded single node by default).
    Serve(ServeArgs),
    /// Run one SQL statement and print the result as a table.
    Sql(SqlArgs),
    /// Load NDJSON, CSV or Parquet files into an index through a running node.
    Load(LoadArgs),
    /// Read a password or token from stdin and print its argon2 hash, for
    /// the `users` and `tokens` of the config file.
    HashPassword,
}

/// `quidditch sql` options.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The SQL statement.
    pub query: String,
    /// Query a running node at this URL instead of opening a data directory.
    #[arg(long, env = "QUIDDITCH_URL")]
    pub url: Option<String>,
    /// Data directory to open when no URL is given (must not be in use by a server).
    #[arg(long, env = "QUIDDITCH_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Output format: table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Credentials for a node that requires them.
    #[command(flatten)]
    pub auth: crate::client::ClientAuth,
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = args.resolve()?;
            runtime()?.block_on(crate::node::serve(config))
        }
        Command::Sql(args) => sql(args),
        Command::Load(args) => crate::load::run(args),
        Command::HashPassword => {
            let mut secret = String::new();
            std::io::stdin().read_line(&mut secret)?;
            let secret = secret.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!secret.is_empty(), "no password on stdin");
            println!("{}", crate::auth::hash_secret(secret)?);
            Ok(())
        }
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let format = match args.format.as_str() {
        "table" => "txt",
        "csv" => "csv",
        "json" => "json",
        other => anyhow::bail!("unknown format [{other}], expected table, csv or json"),
    };
    if let Some(url) = args.url {
        let resp = args
            .auth
            .http_client(std::time::Duration::from_secs(600))?
            .post(format!("{}/_sql?format={format}", url.trim_end_matches('/')))
            .json(&serde_json::json!({"query": args.query}))
            .send()
            .with_context(|| format!("connecting to {url}"))?;
        let status = resp.status();
        let text = resp.text()?;
        if !status.is_success() {
            anyhow::bail!("{status}: {text}");
        }
        print!("{text}");
        return Ok(());
    }
    let rt = runtime()?;
    let data_dir = args.data_dir.clone();
    let indices = quidditch_index::Indices::open(&data_dir).with_context(|| {
        format!(
            "opening data directory {} (if a server is using it, pass --url)",
            data_dir.display()
        )
    })?;
    let indices = Arc::new(indices);
    let engine = quidditch_executor::Engine::new(Arc::clone(&indices), Default::default())?;
    let output = rt.block_on(engine.sql(&args.query))?;
    let text = match format {
        "csv" => crate::format::to_csv(&output.schema, &output.batches)?,
        "json" => format!(
            "{}\n",
            crate::format::to_es_sql_json(&output.schema, &output.batches)?
        ),
        _ => crate::format::to_text(&output.batches)?,
    };
    print!("{text}");
    indices.close()?;
    Ok(())
}
