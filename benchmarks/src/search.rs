//! `qbench search`: a query mix over the generated logs (see `corpus`),
//! each query sent through the HTTP DSL and through Flight SQL to a running
//! embedded node, and run on raw tantivy in-process over an index of the
//! same documents, at concurrency 1, 4 and 16.
//!
//! The node's index is filled by `quidditch load` (HTTP `_bulk`); the
//! tantivy index by a raw `IndexWriter` with the schema a tantivy user would
//! write (`qbench ingest` makes both). Tantivy searches its segments on a
//! 2-thread executor, as the node searches its 2 shards on 2 cores.
//!
//! Every query asks for the same work in the three interfaces: the 10 best
//! hits by score (or the 10 newest, for filters), each with its stored
//! source, and no total; or a count. Before a query is timed, the answers
//! of the three are compared: the same timestamps in the same order for the
//! newest-first queries; for the ranked ones the same scores, and the same
//! documents above the 10th score (ties at it may be any of the tied
//! documents); the same count. The reference index scores text as
//! Quidditch does, BM25 without length normalization (see
//! `ingest::raw_schema`). Tantivy scores every hit of a ranked query:
//! its block-max WAND top-k misses the best hits on a field without field
//! norms, so it is timed doing the work that gives the right answer, which
//! is slower than block-max WAND on a field with norms.
//!
//! Each (query, interface, concurrency) runs `20 × --iterations` requests
//! after a warm-up, spread over that many client threads (each with its own
//! connection), and reports p50/p95/p99 latency and the requests per second
//! of the whole run.

use std::ops::Bound;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow_flight::sql::client::FlightSqlServiceClient;
use serde_json::{Value, json};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, PhraseQuery, Query as TantivyQuery, RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Schema};
use tantivy::{DocAddress, DocId, Index, Order, Score, Searcher, SegmentReader, TantivyDocument, Term};

use crate::Common;
use crate::ingest::{NodeProcess, SHARDS, prepare};
use crate::results::percentile;

/// Concurrency levels of every query.
const CONCURRENCY: [usize; 3] = [1, 4, 16];
/// Requests per (query, interface, concurrency) per `--iterations`.
const REQUESTS_PER_ITERATION: usize = 20;

/// What a query returns.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// The 10 best hits by BM25.
    Ranked,
    /// The 10 newest hits.
    Newest,
    /// The number of hits.
    Count,
}

/// One query of the mix, in the three interfaces.
struct Query {
    name: &'static str,
    kind: Kind,
    /// The DSL query clause.
    dsl: Value,
    /// The SQL condition (`WHERE`), if any.
    sql_where: Option<&'static str>,
    /// The tantivy query.
    tantivy: Box<dyn TantivyQuery>,
}

impl Query {
    fn body(&self) -> Value {
        match self.kind {
            Kind::Count => json!({"query": self.dsl}),
            Kind::Ranked => json!({"query": self.dsl, "size": 10, "track_total_hits": false}),
            Kind::Newest => json!({
                "query": self.dsl, "size": 10, "track_total_hits": false,
                "sort": [{"@timestamp": "desc"}]
            }),
        }
    }

    fn sql(&self) -> String {
        let filter = self.sql_where.map(|w| format!(" WHERE {w}")).unwrap_or_default();
        match self.kind {
            Kind::Count => format!("SELECT count(*) FROM logs{filter}"),
            Kind::Ranked => {
                format!("SELECT _source, _score FROM logs{filter} ORDER BY _score DESC LIMIT 10")
            }
            Kind::Newest => {
                format!("SELECT _source FROM logs{filter} ORDER BY \"@timestamp\" DESC LIMIT 10")
            }
        }
    }
}

/// The fields of the raw tantivy index the queries use.
struct Fields {
    level: Field,
    service: Field,
    message: Field,
    latency: Field,
    source: Field,
}

impl Fields {
    fn of(schema: &Schema) -> Result<Fields> {
        Ok(Fields {
            level: schema.get_field("level")?,
            service: schema.get_field("service")?,
            message: schema.get_field("message")?,
            latency: schema.get_field("latency_ms")?,
            source: schema.get_field("_source")?,
        })
    }

    fn keyword(&self, field: Field, value: &str) -> Box<dyn TantivyQuery> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        ))
    }

    fn word(&self, word: &str) -> Term {
        Term::from_field_text(self.message, word)
    }

    fn latency_range(&self, from: f64, to: Option<f64>) -> Box<dyn TantivyQuery> {
        let upper = to.map_or(Bound::Unbounded, |t| {
            Bound::Excluded(Term::from_field_f64(self.latency, t))
        });
        Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_f64(self.latency, from)),
            upper,
        ))
    }
}

/// A filter in a tantivy boolean query: it must match and adds no score.
fn filter(q: Box<dyn TantivyQuery>) -> (Occur, Box<dyn TantivyQuery>) {
    (Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0)))
}

/// The query mix: term, match, phrase, bool, range, top 10 by score, top 10
/// by timestamp, count.
fn mix(f: &Fields) -> Vec<Query> {
    vec![
        Query {
            name: "term",
            kind: Kind::Newest,
            dsl: json!({"term": {"service": "checkout"}}),
            sql_where: Some("service = 'checkout'"),
            tantivy: f.keyword(f.service, "checkout"),
        },
        Query {
            name: "match",
            kind: Kind::Ranked,
            dsl: json!({"match": {"message": "timeout"}}),
            sql_where: Some("match(message, 'timeout')"),
            tantivy: Box::new(TermQuery::new(f.word("timeout"), IndexRecordOption::WithFreqs)),
        },
        Query {
            name: "phrase",
            kind: Kind::Ranked,
            dsl: json!({"match_phrase": {"message": "connection refused"}}),
            sql_where: Some("match_phrase(message, 'connection refused')"),
            tantivy: Box::new(PhraseQuery::new(vec![f.word("connection"), f.word("refused")])),
        },
        Query {
            name: "bool",
            kind: Kind::Ranked,
            dsl: json!({"bool": {
                "must": [{"match": {"message": "database"}}],
                "filter": [{"term": {"level": "error"}}, {"range": {"latency_ms": {"gte": 500}}}],
                "must_not": [{"term": {"service": "auth"}}]
            }}),
            sql_where: Some(
                "match(message, 'database') AND level = 'error' AND latency_ms >= 500 AND service <> 'auth'",
            ),
            tantivy: Box::new(BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(TermQuery::new(f.word("database"), IndexRecordOption::WithFreqs)),
                ),
                filter(f.keyword(f.level, "error")),
                filter(f.latency_range(500.0, None)),
                (Occur::MustNot, f.keyword(f.service, "auth")),
            ])),
        },
        Query {
            name: "range",
            kind: Kind::Newest,
            dsl: json!({"range": {"latency_ms": {"gte": 1000, "lt": 1500}}}),
            sql_where: Some("latency_ms >= 1000 AND latency_ms < 1500"),
            tantivy: f.latency_range(1000.0, Some(1500.0)),
        },
        Query {
            name: "top10_by_score",
            kind: Kind::Ranked,
            dsl: json!({"match": {"message": "database connection timeout retry"}}),
            sql_where: Some("match(message, 'database connection timeout retry')"),
            tantivy: Box::new(BooleanQuery::new_multiterms_query(
                ["database", "connection", "timeout", "retry"]
                    .iter()
                    .map(|w| f.word(w))
                    .collect(),
            )),
        },
        Query {
            name: "top10_by_timestamp",
            kind: Kind::Newest,
            dsl: json!({"match_all": {}}),
            sql_where: None,
            tantivy: Box::new(AllQuery),
        },
        Query {
            name: "count",
            kind: Kind::Count,
            dsl: json!({"match": {"message": "user"}}),
            sql_where: Some("match(message, 'user')"),
            tantivy: Box::new(TermQuery::new(f.word("user"), IndexRecordOption::Basic)),
        },
    ]
}

/// An answer: the hits' timestamps and scores, or a count.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Hits(Vec<(i64, Option<f64>)>),
    Count(u64),
}

fn timestamp_of(source: &str) -> Result<i64> {
    let doc: Value = serde_json::from_str(source)?;
    doc["@timestamp"].as_i64().context("a source without @timestamp")
}

/// Whether two answers of a query agree (see the module documentation).
fn same_answer(kind: Kind, a: &Answer, b: &Answer) -> bool {
    match (a, b) {
        (Answer::Count(x), Answer::Count(y)) => x == y,
        (Answer::Hits(x), Answer::Hits(y)) if kind == Kind::Newest => {
            x.iter().map(|h| h.0).eq(y.iter().map(|h| h.0))
        }
        (Answer::Hits(x), Answer::Hits(y)) => {
            let close = |s: f64, t: f64| (s - t).abs() <= 1e-4 * s.abs().max(t.abs()).max(1.0);
            let same_scores = x.len() == y.len()
                && x.iter().zip(y).all(|(u, v)| match (u.1, v.1) {
                    (Some(s), Some(t)) => close(s, t),
                    _ => false,
                });
            // Hits scoring above the last one are the same documents; the
            // last score's ties may be any of the documents that tie.
            let above_last = |hits: &[(i64, Option<f64>)]| {
                let last = hits.last().and_then(|h| h.1).unwrap_or(f64::NEG_INFINITY);
                let mut ts: Vec<i64> = hits
                    .iter()
                    .filter(|h| h.1.is_some_and(|s| s > last && !close(s, last)))
                    .map(|h| h.0)
                    .collect();
                ts.sort_unstable();
                ts
            };
            same_scores && above_last(x) == above_last(y)
        }
        _ => false,
    }
}

/// One client: sends the query once per call and returns its answer.
type Worker = Box<dyn FnMut() -> Result<Answer> + Send>;

/// The three interfaces.
#[derive(Debug, Clone, Copy)]
enum Interface {
    Http,
    FlightSql,
    Tantivy,
}

impl Interface {
    fn key(self) -> &'static str {
        match self {
            Interface::Http => "http",
            Interface::FlightSql => "flight_sql",
            Interface::Tantivy => "tantivy",
        }
    }
}

/// What a worker needs to reach each interface.
struct Targets {
    url: String,
    flight: String,
    searcher: Searcher,
    source: Field,
}

impl Targets {
    fn worker(&self, interface: Interface, q: &Query) -> Result<Worker> {
        Ok(match interface {
            Interface::Http => self.http_worker(q)?,
            Interface::FlightSql => self.flight_worker(q)?,
            Interface::Tantivy => self.tantivy_worker(q),
        })
    }

    fn http_worker(&self, q: &Query) -> Result<Worker> {
        let client = reqwest::blocking::Client::builder().build()?;
        let kind = q.kind;
        let endpoint = match kind {
            Kind::Count => "_count",
            _ => "_search",
        };
        let url = format!("{}/logs/{endpoint}", self.url);
        let body = serde_json::to_vec(&q.body())?;
        Ok(Box::new(move || {
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()?;
            let status = resp.status();
            let text = resp.text()?;
            ensure!(status.is_success(), "{url}: {status} {text}");
            let answer: Value = serde_json::from_str(&text)?;
            if kind == Kind::Count {
                return Ok(Answer::Count(answer["count"].as_u64().context("no count")?));
            }
            let hits = answer["hits"]["hits"].as_array().context("no hits")?;
            let hits = hits
                .iter()
                .map(|h| {
                    let ts = h["_source"]["@timestamp"].as_i64().context("no @timestamp")?;
                    Ok((ts, h["_score"].as_f64()))
                })
                .collect::<Result<_>>()?;
            Ok(Answer::Hits(hits))
        }))
    }

    fn flight_worker(&self, q: &Query) -> Result<Worker> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = rt.block_on(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.flight))?.connect(),
        )?;
        let mut client = FlightSqlServiceClient::new(channel);
        let (kind, sql) = (q.kind, q.sql());
        Ok(Box::new(move || {
            let batches = rt.block_on(crate::tpch::execute(&mut client, &sql))?;
            sql_answer(kind, &batches)
        }))
    }

    /// The timestamp in the stored source of a document of the tantivy index.
    fn timestamp(searcher: &Searcher, source: Field, address: DocAddress) -> Result<i64> {
        use tantivy::schema::Value as _;
        let doc: TantivyDocument = searcher.doc(address)?;
        let text = doc.get_first(source).and_then(|v| v.as_str().map(str::to_string));
        timestamp_of(&text.context("a document without _source")?)
    }

    fn tantivy_worker(&self, q: &Query) -> Worker {
        let searcher = self.searcher.clone();
        let query = q.tantivy.box_clone();
        let (kind, source) = (q.kind, self.source);
        Box::new(move || match kind {
            Kind::Count => Ok(Answer::Count(searcher.search(&*query, &Count)? as u64)),
            Kind::Ranked => {
                // Every hit scored: tantivy 0.27's top-k by score (block-max
                // WAND) misses the best hits on a field without field norms,
                // as `message` is in this index.
                let every_hit =
                    TopDocs::with_limit(10).tweak_score(|_: &SegmentReader| |_: DocId, score: Score| score);
                let top = searcher.search(&*query, &every_hit)?;
                let hits = top
                    .into_iter()
                    .map(|(score, address)| {
                        Ok((
                            Self::timestamp(&searcher, source, address)?,
                            Some(f64::from(score)),
                        ))
                    })
                    .collect::<Result<_>>()?;
                Ok(Answer::Hits(hits))
            }
            Kind::Newest => {
                let by_time = TopDocs::with_limit(10)
                    .order_by_fast_field::<tantivy::DateTime>("@timestamp", Order::Desc);
                let top = searcher.search(&*query, &by_time)?;
                let hits = top
                    .into_iter()
                    .map(|(_, address)| Ok((Self::timestamp(&searcher, source, address)?, None)))
                    .collect::<Result<_>>()?;
                Ok(Answer::Hits(hits))
            }
        })
    }
}

/// The answer of a query's SQL from its batches.
fn sql_answer(kind: Kind, batches: &[RecordBatch]) -> Result<Answer> {
    if kind == Kind::Count {
        let batch = batches.iter().find(|b| b.num_rows() > 0).context("no count")?;
        let count = cast(batch.column(0), &DataType::Int64)?;
        return Ok(Answer::Count(count.as_primitive::<Int64Type>().value(0) as u64));
    }
    let mut hits = Vec::new();
    for batch in batches {
        let source = cast(batch.column(0), &DataType::Utf8)?;
        let source = source.as_string::<i32>();
        let score = match kind {
            Kind::Ranked => Some(cast(batch.column(1), &DataType::Float64)?),
            _ => None,
        };
        for row in 0..batch.num_rows() {
            let s = score
                .as_ref()
                .filter(|s| s.is_valid(row))
                .map(|s| s.as_primitive::<Float64Type>().value(row));
            hits.push((timestamp_of(source.value(row))?, s));
        }
    }
    Ok(Answer::Hits(hits))
}

/// Latency percentiles (ms) and throughput of one run.
struct Stats {
    p50: f64,
    p95: f64,
    p99: f64,
    qps: f64,
}

impl Stats {
    fn json(&self) -> Value {
        json!({"p50_ms": self.p50, "p95_ms": self.p95, "p99_ms": self.p99, "qps": self.qps})
    }
}

/// Runs `per_worker` requests on each worker, all at once on their own
/// threads.
fn measure(workers: Vec<Worker>, per_worker: usize) -> Result<Stats> {
    let started = Instant::now();
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut worker| {
                scope.spawn(move || -> Result<Vec<f64>> {
                    let mut times = Vec::with_capacity(per_worker);
                    for _ in 0..per_worker {
                        let t = Instant::now();
                        worker()?;
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(times)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let wall = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    Ok(Stats {
        p50: percentile(&all, 50.0),
        p95: percentile(&all, 95.0),
        p99: percentile(&all, 99.0),
        qps: all.len() as f64 / wall,
    })
}

pub fn run(c: &Common) -> Result<()> {
    ensure!(c.iterations > 0, "--iterations must be at least 1");
    let p = prepare(c)?;
    let node = NodeProcess::start(&p.quidditch_dir)?;
    let mut index = Index::open_in_dir(&p.tantivy_dir)?;
    index.set_multithread_executor(2)?;
    let searcher = index.reader()?.searcher();
    let fields = Fields::of(&index.schema())?;
    let targets = Targets {
        url: node.url.clone(),
        flight: node.flight.clone(),
        searcher,
        source: fields.source,
    };
    let requests = c.iterations * REQUESTS_PER_ITERATION;
    let interfaces = [Interface::Http, Interface::FlightSql, Interface::Tantivy];
    let mut results = Vec::new();
    let mut differences = Vec::new();
    for q in mix(&fields) {
        let mut answers = Vec::new();
        for interface in interfaces {
            let mut worker = targets.worker(interface, &q)?;
            let mut answer = worker()?;
            for _ in 0..3 {
                answer = worker()?;
            }
            answers.push(answer);
        }
        let same = answers.windows(2).all(|w| same_answer(q.kind, &w[0], &w[1]));
        if !same {
            differences.push(format!(
                "{}: http {:?}, flight sql {:?}, tantivy {:?}",
                q.name, answers[0], answers[1], answers[2]
            ));
        }
        let mut runs = Vec::new();
        for concurrency in CONCURRENCY {
            let mut run = json!({"concurrency": concurrency});
            for interface in interfaces {
                let workers = (0..concurrency)
                    .map(|_| targets.worker(interface, &q))
                    .collect::<Result<Vec<_>>>()?;
                let stats = measure(workers, requests.div_ceil(concurrency))?;
                eprintln!(
                    "{:<18} c={concurrency:<2} {:<10} p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  {:>8.0} q/s",
                    q.name,
                    interface.key(),
                    stats.p50,
                    stats.p95,
                    stats.p99,
                    stats.qps
                );
                run[interface.key()] = stats.json();
            }
            runs.push(run);
        }
        results.push(json!({
            "query": q.name,
            "dsl": q.body(),
            "sql": q.sql(),
            "same_answer": same,
            "runs": runs,
        }));
    }
    drop(node);
    crate::results::write(
        &c.out,
        "search",
        json!({
            "docs": c.docs,
            "shards": SHARDS,
            "requests": requests,
            "reference": "raw tantivy in-process (Searcher on a 2-thread executor) over an index of the same documents",
            "queries": results,
        }),
    )?;
    if c.check && !differences.is_empty() {
        bail!("answers differ:\n{}", differences.join("\n"));
    }
    Ok(())
}
