//! The generated corpus: log-like documents, deterministic for a given count.

use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::json;

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const STATUSES: [i64; 8] = [200, 200, 200, 201, 301, 404, 500, 503];
const PATHS: [&str; 6] = [
    "/",
    "/api/users",
    "/api/orders",
    "/static/app.js",
    "/login",
    "/search",
];
const WORDS: [&str; 12] = [
    "request",
    "completed",
    "timeout",
    "cache",
    "miss",
    "hit",
    "user",
    "session",
    "upstream",
    "error",
    "retry",
    "ok",
];

/// A small deterministic generator (xorshift).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One document as a JSON line.
pub fn doc(i: usize, rng: &mut Rng) -> String {
    let status = STATUSES[rng.below(STATUSES.len() as u64) as usize];
    let words: Vec<&str> = (0..6)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    json!({
        "@timestamp": 1_700_000_000_000i64 + (i as i64) * 37,
        "host": format!("web-{:02}", rng.below(20)),
        "method": METHODS[rng.below(4) as usize],
        "path": PATHS[rng.below(PATHS.len() as u64) as usize],
        "status": status,
        "bytes": (rng.below(50_000) + 200) as i64,
        "latency_ms": rng.below(2_000) as f64 / 10.0,
        "message": words.join(" "),
    })
    .to_string()
}

/// Writes `n` documents as NDJSON.
pub fn write_ndjson(path: &Path, n: usize) -> anyhow::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    let mut rng = Rng::new(42);
    for i in 0..n {
        w.write_all(doc(i, &mut rng).as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// The explicit mapping both systems use.
pub fn mapping() -> serde_json::Value {
    json!({"mappings": {"properties": {
        "@timestamp": {"type": "date"}, "host": {"type": "keyword"}, "method": {"type": "keyword"},
        "path": {"type": "keyword"}, "status": {"type": "long"}, "bytes": {"type": "long"},
        "latency_ms": {"type": "double"}, "message": {"type": "text"}
    }}})
}
