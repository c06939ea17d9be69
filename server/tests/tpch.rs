//! TPC-H at scale factor 0.1 (tpchgen-arrow), loaded through Flight `DoPut`
//! as 8 indices on the embedded node and across three data nodes: the
//! queries of `benchmarks/queries` give the same answers on both. (q16's
//! `NOT IN` becomes a null-aware anti join, which the distributed planner
//! runs in one task: that task reads the shards of other nodes from them.)
//!
//! TPC-H's decimals are `scaled_float`s, exact decimals in SQL: sums do not
//! depend on the order in which the shards' partial sums arrive, so q15's
//! equality of two sums holds on the cluster as on the single node.

mod common;

use anyhow::{Context, Result, ensure};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use common::{Cluster, Server};
use serde_json::{Map, Value, json};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

const SCALE: f64 = 0.1;

/// The tables, their rows and their shards on the cluster.
fn tables() -> Result<Vec<(&'static str, u32, Vec<RecordBatch>)>> {
    fn all(
        it: impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>,
    ) -> Result<Vec<RecordBatch>> {
        Ok(it.collect::<Result<Vec<_>, _>>()?)
    }
    Ok(vec![
        (
            "region",
            1,
            all(RegionArrow::new(RegionGenerator::new(SCALE, 1, 1)))?,
        ),
        (
            "nation",
            1,
            all(NationArrow::new(NationGenerator::new(SCALE, 1, 1)))?,
        ),
        (
            "supplier",
            2,
            all(SupplierArrow::new(SupplierGenerator::new(SCALE, 1, 1)))?,
        ),
        (
            "customer",
            3,
            all(CustomerArrow::new(CustomerGenerator::new(SCALE, 1, 1)))?,
        ),
        ("part", 3, all(PartArrow::new(PartGenerator::new(SCALE, 1, 1)))?),
        (
            "partsupp",
            3,
            all(PartSuppArrow::new(PartSuppGenerator::new(SCALE, 1, 1)))?,
        ),
        (
            "orders",
            4,
            all(OrderArrow::new(OrderGenerator::new(SCALE, 1, 1)))?,
        ),
        (
            "lineitem",
            6,
            all(LineItemArrow::new(LineItemGenerator::new(SCALE, 1, 1)))?,
        ),
    ])
}

/// The mapping of a table: keys and counts as `long`, decimals as
/// `scaled_float` of their scale, strings as `keyword`, dates as `date`.
fn mapping(schema: &Schema) -> Result<Value> {
    let mut props = Map::new();
    for f in schema.fields() {
        let def = match f.data_type() {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => json!({"type": "long"}),
            DataType::Decimal128(_, scale) => {
                json!({"type": "scaled_float", "scaling_factor": 10f64.powi(i32::from(*scale))})
            }
            DataType::Float64 => json!({"type": "double"}),
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => json!({"type": "keyword"}),
            DataType::Date32 => json!({"type": "date"}),
            other => anyhow::bail!("unexpected type {other} of {}", f.name()),
        };
        props.insert(f.name().clone(), def);
    }
    Ok(json!({"properties": props}))
}

fn load(server: &Server, tables: &[(&str, u32, Vec<RecordBatch>)], sharded: bool) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    for (name, shards, batches) in tables {
        let schema = batches.first().context("no rows")?.schema();
        let shards = if sharded { *shards } else { 1 };
        let (status, body) = server.put(
            &format!("/{name}"),
            &json!({"settings": {"number_of_shards": shards}, "mappings": mapping(&schema)?}),
        )?;
        ensure!(status == 200, "creating {name}: {body}");
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let written = rt.block_on(quidditch_flight::ingest::send(
            &server.flight,
            name,
            batches.clone(),
        ))?;
        ensure!(written == rows as u64, "{name}: wrote {written} of {rows}");
    }
    Ok(())
}

/// Floats equal to 1e-9 relative (sums in another order), the rest exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        _ => a == b,
    }
}

#[test]
fn tpch_queries_answer_the_same_on_three_data_nodes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tables = tables()?;
    let single = Server::start(&dir.path().join("single"))?;
    let cluster = Cluster::start(dir.path(), 3)?;
    load(&single, &tables, false)?;
    load(&cluster.coordinator, &tables, true)?;
    let queries = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benchmarks/queries");
    let mut failures = Vec::new();
    for q in 1..=22 {
        let sql = std::fs::read_to_string(queries.join(format!("q{q}.sql")))?;
        let want = single.post("/_sql", &json!({"query": sql}))?;
        let got = cluster.coordinator.post("/_sql", &json!({"query": sql}))?;
        ensure!(want.0 == 200, "q{q} on the single node: {}", want.1);
        let rows = want.1["rows"].as_array().map_or(0, Vec::len);
        ensure!(rows > 0, "q{q} answers nothing on the single node");
        if got.0 != 200 || !same(&want.1["rows"], &got.1["rows"]) {
            failures.push(format!(
                "q{q}: single node {} rows, cluster {}: {}",
                rows, got.0, got.1
            ));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
