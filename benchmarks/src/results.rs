//! JSON result files: one per suite, naming the machine and the reference.

use std::path::Path;

use serde_json::{Value, json};

/// The `p`-th percentile (nearest rank) of sorted values; NaN of none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median (the upper one of an even count) of some values.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Facts about the machine the figures come from.
pub fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    json!({"cores": cores, "cpu": cpu, "os": std::env::consts::OS})
}

/// Writes `<out>/<suite>.json` and prints it.
pub fn write(out: &Path, suite: &str, mut result: Value) -> anyhow::Result<()> {
    result["suite"] = json!(suite);
    result["machine"] = machine();
    result["date"] = json!(chrono::Utc::now().to_rfc3339());
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("{suite}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    eprintln!("wrote {}", path.display());
    Ok(())
}
