//! The generated corpus: log-like documents, the same for a given count on
//! every machine (a fixed-seed xorshift generator, no other input).
//!
//! Document `i` of a corpus:
//! - `@timestamp`: 2023-11-14T22:13:20Z plus `37 * i` ms (unique, increasing);
//! - `level`: `info` 70 %, `warn` 15 %, `error` 10 %, `debug` 5 %;
//! - `service`: one of 12 services, Zipf-distributed (exponent 1);
//! - `host`: `web-00` to `web-19`, uniform;
//! - `method`, `path`: one of 4 and one of 6, uniform;
//! - `status`: 5xx for most errors, 4xx for some warnings, else 2xx/3xx;
//! - `bytes`: uniform in 200..50,200;
//! - `latency_ms`: log-normal (median about 40 ms, a long tail to seconds),
//!   0.1 ms resolution, much slower on errors;
//! - `message`: one of 12 message templates (Zipf) with its variables filled
//!   in, followed by 3 to 12 words drawn from a 5,000-word vocabulary with
//!   Zipf's law (exponent 1.05): the 118 most frequent are real words of
//!   log messages, the rest pronounceable made-up words, so that common terms
//!   match most documents and rare ones a handful, as in real logs.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const PATHS: [&str; 6] = [
    "/",
    "/api/users",
    "/api/orders",
    "/static/app.js",
    "/login",
    "/search",
];
/// Services, most frequent first.
const SERVICES: [&str; 12] = [
    "frontend",
    "checkout",
    "payments",
    "auth",
    "search",
    "catalog",
    "cart",
    "shipping",
    "email",
    "recommendations",
    "inventory",
    "billing",
];
/// Message templates, most frequent first; `{}` holes take a number.
const TEMPLATES: [&str; 12] = [
    "request completed in {} ms",
    "cache hit for key user:{}",
    "cache miss for key session:{}",
    "user {} logged in",
    "slow query took {} ms on table orders",
    "connection refused by upstream {}",
    "retrying request after timeout attempt {}",
    "payment declined for order {}",
    "timeout waiting for database connection after {} ms",
    "disk usage at {} percent",
    "failed to parse request body at byte {}",
    "circuit breaker opened after {} failures",
];
/// The most frequent words of the free text, most frequent first.
const COMMON_WORDS: [&str; 118] = [
    "the",
    "request",
    "to",
    "user",
    "for",
    "ok",
    "in",
    "error",
    "from",
    "session",
    "with",
    "cache",
    "on",
    "service",
    "is",
    "connection",
    "at",
    "response",
    "id",
    "after",
    "client",
    "server",
    "failed",
    "timeout",
    "retry",
    "upstream",
    "database",
    "query",
    "completed",
    "started",
    "by",
    "status",
    "http",
    "api",
    "token",
    "order",
    "payment",
    "handler",
    "worker",
    "queue",
    "job",
    "message",
    "event",
    "key",
    "value",
    "read",
    "write",
    "lock",
    "thread",
    "pool",
    "socket",
    "closed",
    "open",
    "new",
    "old",
    "config",
    "loaded",
    "reload",
    "invalid",
    "valid",
    "missing",
    "found",
    "not",
    "no",
    "yes",
    "true",
    "false",
    "null",
    "empty",
    "full",
    "limit",
    "rate",
    "exceeded",
    "backoff",
    "delay",
    "latency",
    "slow",
    "fast",
    "memory",
    "cpu",
    "disk",
    "network",
    "packet",
    "dropped",
    "received",
    "sent",
    "bytes",
    "size",
    "batch",
    "flush",
    "commit",
    "rollback",
    "transaction",
    "index",
    "shard",
    "replica",
    "primary",
    "leader",
    "follower",
    "election",
    "heartbeat",
    "node",
    "cluster",
    "health",
    "green",
    "yellow",
    "red",
    "warning",
    "critical",
    "debug",
    "trace",
    "span",
    "metric",
    "counter",
    "gauge",
    "histogram",
    "sample",
    "export",
];
/// Size of the free-text vocabulary.
const VOCABULARY: usize = 5_000;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Ranks 0..n drawn with probability proportional to `1 / (rank + 1)^s`.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|r| {
                total += 1.0 / (r as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Zipf {
            cumulative: cumulative.iter().map(|c| c / total).collect(),
        }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }
}

/// The free-text vocabulary, most frequent first: the common words, then
/// made-up words of 2 to 4 syllables.
fn vocabulary() -> Vec<String> {
    const ONSETS: [&str; 16] = [
        "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br",
    ];
    const VOWELS: [&str; 6] = ["a", "e", "i", "o", "u", "ai"];
    let mut words: Vec<String> = COMMON_WORDS.iter().map(|w| w.to_string()).collect();
    let mut rng = Rng::new(7);
    let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
    while words.len() < VOCABULARY {
        let syllables = 2 + rng.below(3);
        let word: String = (0..syllables)
            .map(|_| {
                format!(
                    "{}{}",
                    ONSETS[rng.below(ONSETS.len() as u64) as usize],
                    VOWELS[rng.below(VOWELS.len() as u64) as usize]
                )
            })
            .collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// Makes the documents of a corpus, one after the other.
struct Generator {
    rng: Rng,
    next: usize,
    words: Vec<String>,
    word_rank: Zipf,
    service_rank: Zipf,
    template_rank: Zipf,
}

impl Default for Generator {
    fn default() -> Generator {
        Generator {
            rng: Rng::new(42),
            next: 0,
            words: vocabulary(),
            word_rank: Zipf::new(VOCABULARY, 1.05),
            service_rank: Zipf::new(SERVICES.len(), 1.0),
            template_rank: Zipf::new(TEMPLATES.len(), 1.0),
        }
    }
}

impl Generator {
    /// The next document as a JSON line.
    fn next_doc(&mut self) -> String {
        let i = self.next;
        self.next += 1;
        let rng = &mut self.rng;
        let level = match rng.below(100) {
            0..70 => "info",
            70..85 => "warn",
            85..95 => "error",
            _ => "debug",
        };
        let status = match (level, rng.below(10)) {
            ("error", 0..8) => [500, 502, 503][rng.below(3) as usize],
            ("warn", 0..4) => [400, 401, 404, 429][rng.below(4) as usize],
            _ => [200, 200, 200, 201, 204, 301, 304][rng.below(7) as usize],
        };
        let slow = if level == "error" { 2.5 } else { 0.0 };
        let latency = (3.7 + slow + 1.1 * rng.normal()).exp().min(60_000.0);
        let template = TEMPLATES[self.template_rank.sample(rng)];
        let mut message = template.replace("{}", &rng.below(10_000).to_string());
        for _ in 0..3 + rng.below(10) {
            message.push(' ');
            message.push_str(&self.words[self.word_rank.sample(rng)]);
        }
        json!({
            "@timestamp": 1_700_000_000_000i64 + (i as i64) * 37,
            "level": level,
            "service": SERVICES[self.service_rank.sample(rng)],
            "host": format!("web-{:02}", rng.below(20)),
            "method": METHODS[rng.below(4) as usize],
            "path": PATHS[rng.below(PATHS.len() as u64) as usize],
            "status": status,
            "bytes": (rng.below(50_000) + 200) as i64,
            "latency_ms": (latency * 10.0).round() / 10.0,
            "message": message,
        })
        .to_string()
    }
}

/// The version of the generator, part of the names of files made from it,
/// so that a work directory never serves documents of an older generator.
pub const VERSION: u32 = 2;

/// The NDJSON file of `n` documents in `dir`, generated unless present.
pub fn ndjson(dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("logs-v{VERSION}-{n}.ndjson"));
    if !path.exists() {
        eprintln!("generating {n} documents");
        write_ndjson(&path, n)?;
    }
    Ok(path)
}

/// Writes `n` documents as NDJSON.
fn write_ndjson(path: &Path, n: usize) -> anyhow::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    let mut generator = Generator::default();
    for _ in 0..n {
        w.write_all(generator.next_doc().as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// The explicit mapping both systems use.
pub fn mapping() -> serde_json::Value {
    json!({"mappings": {"properties": {
        "@timestamp": {"type": "date"}, "level": {"type": "keyword"}, "service": {"type": "keyword"},
        "host": {"type": "keyword"}, "method": {"type": "keyword"}, "path": {"type": "keyword"},
        "status": {"type": "long"}, "bytes": {"type": "long"}, "latency_ms": {"type": "double"},
        "message": {"type": "text"}
    }}})
}
