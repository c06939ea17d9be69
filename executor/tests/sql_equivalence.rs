//! SQL over indices gives the same answers as DataFusion over in-memory
//! tables holding the same rows.

use std::sync::Arc;

use anyhow::Result;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, ListBuilder, StringBuilder,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use quidditch_executor::{Engine, EngineConfig};
use quidditch_index::Indices;
use quidditch_index::index::DocWrite;
use serde_json::{Value, json};

struct Person {
    name: String,
    age: Option<i64>,
    score: Option<f64>,
    city: Option<&'static str>,
    joined: i64,
    active: bool,
    tags: Vec<String>,
}

fn people() -> Vec<Person> {
    let cities = ["paris", "rome", "oslo", "lima"];
    (0..240)
        .map(|i: i64| Person {
            name: format!("{}{i:03}", ["a", "b", "c"][(i % 3) as usize]),
            age: (i % 11 != 0).then_some(18 + (i * 7) % 50),
            score: (i % 13 != 0).then_some(((i * 37) % 1000) as f64 / 4.0),
            city: (i % 17 != 0).then_some(cities[(i % 4) as usize]),
            joined: 1_577_836_800_000 + i * 86_400_000 * 3,
            active: i % 5 < 3,
            tags: (0..(i % 3)).map(|t| format!("t{}", (i + t) % 4)).collect(),
        })
        .collect()
}

fn orders() -> Vec<(String, f64, i64)> {
    (0..300)
        .map(|i: i64| {
            (
                format!("{}{:03}", ["a", "b", "c"][(i % 3) as usize], (i * 7) % 260),
                (i % 90) as f64 + 0.5,
                i % 4 + 1,
            )
        })
        .collect()
}

fn person_json(p: &Person) -> Value {
    let mut v = json!({"name": p.name, "joined": p.joined, "active": p.active, "tags": p.tags});
    if let Some(a) = p.age {
        v["age"] = json!(a);
    }
    if let Some(s) = p.score {
        v["score"] = json!(s);
    }
    if let Some(c) = p.city {
        v["city"] = json!(c);
    }
    v
}

fn dict(values: Vec<Option<&str>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<DictionaryArray<Int32Type>>())
}

fn memory_context(people: &[Person], orders: &[(String, f64, i64)]) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    let kw = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let schema = Arc::new(Schema::new(vec![
        Field::new("active", DataType::Boolean, true),
        Field::new("age", DataType::Int64, true),
        Field::new("city", kw.clone(), true),
        Field::new("joined", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("name", kw.clone(), true),
        Field::new("score", DataType::Float64, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]));
    let mut tags = ListBuilder::new(StringBuilder::new());
    for p in people {
        for t in &p.tags {
            tags.values().append_value(t);
        }
        // As in Elasticsearch, an empty array is a missing value.
        tags.append(!p.tags.is_empty());
    }
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(BooleanArray::from(
                people.iter().map(|p| Some(p.active)).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(people.iter().map(|p| p.age).collect::<Vec<_>>())),
            dict(people.iter().map(|p| p.city).collect()),
            Arc::new(TimestampMillisecondArray::from(
                people.iter().map(|p| Some(p.joined)).collect::<Vec<_>>(),
            )),
            dict(people.iter().map(|p| Some(p.name.as_str())).collect()),
            Arc::new(Float64Array::from(
                people.iter().map(|p| p.score).collect::<Vec<_>>(),
            )),
            Arc::new(tags.finish()),
        ],
    )?;
    ctx.register_table("people", Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))?;
    let oschema = Arc::new(Schema::new(vec![
        Field::new("amount", DataType::Float64, true),
        Field::new("person", kw, true),
        Field::new("qty", DataType::Int64, true),
    ]));
    let obatch = RecordBatch::try_new(
        Arc::clone(&oschema),
        vec![
            Arc::new(Float64Array::from(
                orders.iter().map(|o| Some(o.1)).collect::<Vec<_>>(),
            )),
            dict(orders.iter().map(|o| Some(o.0.as_str())).collect()),
            Arc::new(Int64Array::from(
                orders.iter().map(|o| Some(o.2)).collect::<Vec<_>>(),
            )),
        ],
    )?;
    ctx.register_table(
        "orders",
        Arc::new(MemTable::try_new(oschema, vec![vec![obatch]])?),
    )?;
    Ok(ctx)
}

fn index_engine(dir: &std::path::Path, people: &[Person], orders: &[(String, f64, i64)]) -> Result<Engine> {
    let indices = Arc::new(Indices::open(dir)?);
    let mapping = json!({"settings": {"number_of_shards": 3}, "mappings": {"properties": {
        "name": {"type": "keyword"}, "age": {"type": "long"}, "score": {"type": "double"},
        "city": {"type": "keyword"}, "joined": {"type": "date"}, "active": {"type": "boolean"},
        "tags": {"type": "keyword"}
    }}});
    let index = indices.create("people", Some(&mapping))?;
    let writes = people
        .iter()
        .map(|p| DocWrite::Index {
            id: Some(p.name.clone()),
            source: person_json(p).to_string().into(),
            create: true,
            condition: None,
        })
        .collect();
    let result = index.write(writes, quidditch_index::RefreshPolicy::None)?;
    assert!(result.items.iter().all(|(_, r)| r.is_ok()));
    index.refresh()?;
    let omapping = json!({"settings": {"number_of_shards": 2}, "mappings": {"properties": {
        "person": {"type": "keyword"}, "amount": {"type": "double"}, "qty": {"type": "long"}
    }}});
    let oindex = indices.create("orders", Some(&omapping))?;
    let writes = orders
        .iter()
        .map(|o| DocWrite::Index {
            id: None,
            source: json!({"person": o.0, "amount": o.1, "qty": o.2})
                .to_string()
                .into(),
            create: true,
            condition: None,
        })
        .collect();
    let result = oindex.write(writes, quidditch_index::RefreshPolicy::None)?;
    assert!(result.items.iter().all(|(_, r)| r.is_ok()));
    oindex.refresh()?;
    Ok(Engine::new(indices, EngineConfig::default())?)
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
    }
    Ok(out)
}

/// (query, whether the row order is defined by the query)
const QUERIES: &[(&str, bool)] = &[
    ("SELECT count(*) FROM people", true),
    ("SELECT city, count(*), avg(age) FROM people GROUP BY city", false),
    // Partial aggregates computed inside the scan (keyword group, numeric
    // and date states, missing keys and values).
    (
        "SELECT city, count(*), sum(score), min(score), max(score), avg(age), count(age), min(joined), max(joined), sum(age) FROM people GROUP BY city",
        false,
    ),
    (
        "SELECT city, count(*), avg(score) FROM people WHERE age > 30 GROUP BY city",
        false,
    ),
    (
        "SELECT sum(age), min(score), max(joined), avg(score), count(score) FROM people",
        false,
    ),
    (
        "SELECT age, count(*), sum(score), max(joined) FROM people GROUP BY age",
        false,
    ),
    (
        "SELECT name, age FROM people WHERE age > 30 ORDER BY age DESC, name LIMIT 10",
        true,
    ),
    ("SELECT count(*) FROM people WHERE city = 'paris'", true),
    ("SELECT count(*) FROM people WHERE age BETWEEN 20 AND 40", true),
    (
        "SELECT count(*) FROM people WHERE city IN ('paris', 'rome')",
        true,
    ),
    ("SELECT count(*) FROM people WHERE score IS NULL", true),
    (
        "SELECT count(*) FROM people WHERE city IS NOT NULL AND age IS NULL",
        true,
    ),
    ("SELECT name FROM people WHERE name LIKE 'a1%'", false),
    ("SELECT min(joined), max(joined) FROM people", true),
    (
        "SELECT active, sum(score), count(score) FROM people GROUP BY active",
        false,
    ),
    (
        "SELECT p.city, sum(o.amount), sum(o.qty) FROM people p JOIN orders o ON p.name = o.person GROUP BY p.city",
        false,
    ),
    (
        "WITH t AS (SELECT city, avg(age) AS a FROM people GROUP BY city) SELECT city, a FROM t WHERE a > 30",
        false,
    ),
    (
        "SELECT name, city, age, rank() OVER (PARTITION BY city ORDER BY age DESC, name) AS r FROM people",
        false,
    ),
    (
        "SELECT city, count(DISTINCT name) FROM people GROUP BY city",
        false,
    ),
    ("SELECT count(*) FROM people WHERE city <> 'paris'", true),
    ("SELECT count(*) FROM people WHERE NOT (age < 30)", true),
    ("SELECT name FROM people WHERE age > 60 OR city = 'rome'", false),
    (
        "SELECT name FROM people WHERE age > (SELECT avg(age) FROM people)",
        false,
    ),
    (
        "SELECT date_trunc('month', joined) AS m, count(*) FROM people GROUP BY m",
        false,
    ),
    ("SELECT city, median(age) FROM people GROUP BY city", false),
    (
        "SELECT name, age FROM people ORDER BY age ASC NULLS FIRST, name LIMIT 7",
        true,
    ),
    (
        "SELECT name, score FROM people WHERE score > 100 ORDER BY score DESC LIMIT 5",
        false,
    ),
    (
        "SELECT age FROM people WHERE age IS NOT NULL ORDER BY age LIMIT 12",
        true,
    ),
    ("SELECT joined FROM people ORDER BY joined DESC LIMIT 3", true),
    (
        "SELECT name FROM people WHERE city = 'oslo' UNION ALL SELECT person FROM orders WHERE qty = 4",
        false,
    ),
    ("SELECT count(*) FROM people WHERE active", true),
    ("SELECT count(*) FROM people WHERE NOT active", true),
    (
        "SELECT o.person, count(*) FROM orders o LEFT JOIN people p ON p.name = o.person WHERE p.name IS NULL GROUP BY o.person",
        false,
    ),
    ("SELECT count(*) FROM people WHERE joined >= '2021-01-01'", true),
    (
        "SELECT name, cardinality(tags) FROM people WHERE cardinality(tags) > 1",
        false,
    ),
    (
        "SELECT count(*), sum(age) FROM people WHERE score >= 10 AND score < 50.5",
        true,
    ),
    (
        "SELECT city, count(CAST(age AS DOUBLE)), min(CAST(age AS DOUBLE)), max(CAST(age AS DOUBLE)), \
         avg(CAST(age AS DOUBLE)), sum(CAST(age AS DOUBLE)) FROM people GROUP BY city",
        false,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_indices_matches_in_memory_tables() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let people = people();
    let orders = orders();
    let memory = memory_context(&people, &orders)?;
    let engine = index_engine(dir.path(), &people, &orders)?;
    assert!(QUERIES.len() >= 20);
    for (sql, ordered) in QUERIES {
        let expected = memory.sql(sql).await?.collect().await?;
        let actual = engine.sql(sql).await.map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
        let (mut want, mut got) = (rows(&expected)?, rows(&actual.batches)?);
        if !ordered {
            want.sort();
            got.sort();
        }
        assert!(
            !want.is_empty(),
            "query returned nothing, so it proves nothing: {sql}"
        );
        assert_eq!(got, want, "{sql}");
    }
    Ok(())
}

#[tokio::test]
async fn partial_aggregates_run_inside_the_scan() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // More partitions above the scans than shards, and exactly one: the
    // pushdown must not depend on the machine's core count.
    let base = index_engine(dir.path(), &people(), &orders())?;
    for target_partitions in [1, 8] {
        let engine = Engine::new(
            Arc::clone(base.indices()),
            EngineConfig {
                target_partitions,
                ..EngineConfig::default()
            },
        )?;
        check_pushdown(&engine).await?;
    }
    Ok(())
}

async fn check_pushdown(engine: &Engine) -> Result<()> {
    let explain = |sql: &str| {
        let engine = engine.clone();
        let sql = format!("EXPLAIN {sql}");
        async move {
            let out = engine.sql(&sql).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok::<_, anyhow::Error>(rows(&out.batches)?.join("\n"))
        }
    };
    for sql in [
        "SELECT city, count(*), avg(age), max(joined) FROM people GROUP BY city",
        "SELECT age, count(*), sum(score) FROM people GROUP BY age",
        // Several metrics of one cast field (a DSL `stats`): the shared cast
        // becomes a projection below the aggregate.
        "SELECT min(CAST(age AS DOUBLE)), max(CAST(age AS DOUBLE)), sum(CAST(age AS DOUBLE)) FROM people",
    ] {
        let grouped = explain(sql).await?;
        assert!(grouped.contains("TantivyAggregateExec"), "{grouped}");
        assert!(!grouped.contains("mode=Partial"), "{grouped}");
    }
    // A bare count is tantivy's count of each segment's matches, one
    // partial state per shard: no rows leave the shards.
    let count = explain("SELECT count(*) FROM people").await?;
    assert!(
        count.contains("aggr=[CountRows(*)]") && !count.contains("mode=Partial"),
        "{count}"
    );
    // Not pushed: a DISTINCT, a multi-valued group key.
    let distinct = explain("SELECT city, count(DISTINCT age) FROM people GROUP BY city").await?;
    assert!(!distinct.contains("TantivyAggregateExec"), "{distinct}");
    Ok(())
}

#[tokio::test]
async fn pushed_down_aggregates_respect_the_memory_limit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = index_engine(dir.path(), &people(), &orders())?;
    let engine = Engine::new(
        Arc::clone(base.indices()),
        EngineConfig {
            memory_limit: Some(64),
            ..EngineConfig::default()
        },
    )?;
    let err = engine
        .sql("SELECT name, count(*), sum(score) FROM people GROUP BY name")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("TantivyAggregateExec"), "{err}");
    Ok(())
}
