//! The JSON DSL scenario suite: every file under `tests/scenarios/<feature>/`
//! is a request against a real node loaded with `tests/scenarios/fixtures.json`
//! and the part of the response it must contain (see the folder's README).
//! `SCENARIO=terms/00` runs only the files whose path contains the text.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use common::Server;
use serde_json::{Value, json};

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

fn load_fixtures(server: &Server) -> Result<()> {
    let text = std::fs::read_to_string(scenario_dir().join("fixtures.json"))?;
    let fixtures: Value = serde_json::from_str(&text)?;
    for index in fixtures["indices"].as_array().context("fixtures.indices")? {
        let name = index["name"].as_str().context("index name")?;
        let (status, body) = server.put(
            &format!("/{name}"),
            &json!({"settings": index["settings"], "mappings": index["mappings"]}),
        )?;
        ensure!(status == 200, "creating {name}: {body}");
        let mut lines = Vec::new();
        for doc in index["docs"].as_array().context("docs")? {
            lines.push(json!({"index": {"_id": doc["_id"]}}));
            lines.push(doc["_source"].clone());
        }
        let (status, body) = server.bulk(&format!("/{name}/_bulk?refresh=true"), &lines)?;
        ensure!(
            status == 200 && body["errors"] == json!(false),
            "loading {name}: {body}"
        );
    }
    Ok(())
}

fn scenario_files() -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(scenario_dir())? {
        let dir = dir?.path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir)? {
                let f = f?.path();
                if f.extension().is_some_and(|e| e == "yaml") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

fn numbers_match(want: f64, got: f64, tolerance: Option<f64>) -> bool {
    let tol = tolerance.unwrap_or(1e-9);
    want == got || (want - got).abs() <= tol * want.abs().max(got.abs()).max(1.0)
}

/// Checks `got` against the partial expectation `want`; errors name the path.
fn check(want: &Value, got: &Value, path: &str, tolerance: Option<f64>) -> Result<()> {
    match want {
        Value::String(s) if s == "$any" => Ok(()),
        Value::Object(w) if w.len() == 1 && w.contains_key("$unordered") => {
            let items = w["$unordered"].as_array().context("$unordered takes an array")?;
            let got_items = got
                .as_array()
                .ok_or_else(|| anyhow!("{path}: expected an array, got {got}"))?;
            ensure!(
                items.len() == got_items.len(),
                "{path}: expected {} elements, got {}: {got}",
                items.len(),
                got_items.len()
            );
            let mut used = vec![false; got_items.len()];
            for item in items {
                let found = got_items
                    .iter()
                    .enumerate()
                    .find(|(i, g)| !used[*i] && check(item, g, path, tolerance).is_ok());
                match found {
                    Some((i, _)) => used[i] = true,
                    None => bail!("{path}: no element matches {item} in {got}"),
                }
            }
            Ok(())
        }
        Value::Object(w) => {
            let g = got
                .as_object()
                .ok_or_else(|| anyhow!("{path}: expected an object, got {got}"))?;
            for (k, v) in w {
                let p = format!("{path}.{k}");
                match (v, g.get(k)) {
                    (Value::String(s), None) if s == "$absent" => {}
                    (Value::String(s), Some(x)) if s == "$absent" => bail!("{p}: expected absent, got {x}"),
                    (_, None) => bail!("{p}: missing in {got}"),
                    (v, Some(x)) => check(v, x, &p, tolerance)?,
                }
            }
            Ok(())
        }
        Value::Array(w) => {
            let g = got
                .as_array()
                .ok_or_else(|| anyhow!("{path}: expected an array, got {got}"))?;
            ensure!(
                w.len() == g.len(),
                "{path}: expected {} elements, got {}: {got}",
                w.len(),
                g.len()
            );
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                check(a, b, &format!("{path}[{i}]"), tolerance)?;
            }
            Ok(())
        }
        Value::Number(n) => {
            let want = n.as_f64().unwrap_or(f64::NAN);
            match got.as_f64() {
                Some(x) if numbers_match(want, x, tolerance) => Ok(()),
                _ => bail!("{path}: expected {want}, got {got}"),
            }
        }
        other => {
            ensure!(other == got, "{path}: expected {other}, got {got}");
            Ok(())
        }
    }
}

fn run_scenario(server: &Server, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)?;
    let scenario: Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let request = &scenario["request"];
    let method = request["method"].as_str().unwrap_or("POST");
    let path = request["path"].as_str().context("request.path")?;
    let (body, content_type) = if let Some(lines) = request["ndjson"].as_array() {
        let mut body = String::new();
        for l in lines {
            body.push_str(&l.to_string());
            body.push('\n');
        }
        (Some(body), "application/x-ndjson")
    } else if let Some(raw) = request["raw"].as_str() {
        (Some(raw.to_string()), "application/json")
    } else if request.get("body").is_some() {
        (Some(request["body"].to_string()), "application/json")
    } else {
        (None, "")
    };
    let (status, got) = server.request(method, path, body.as_deref(), content_type)?;
    let expect = &scenario["expect"];
    let want_status = expect["status"].as_u64().unwrap_or(200) as u16;
    ensure!(
        status == want_status,
        "status {status}, expected {want_status}: {got}"
    );
    let tolerance = scenario["tolerance"].as_f64();
    if let Some(want) = expect.get("body") {
        check(want, &got, "$", tolerance).with_context(|| format!("response: {got}"))?;
    }
    Ok(())
}

#[test]
fn dsl_scenarios() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    load_fixtures(&server)?;
    let filter = std::env::var("SCENARIO").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in scenario_files()? {
        let name = file.strip_prefix(scenario_dir())?.display().to_string();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        if let Err(e) = run_scenario(&server, &file) {
            failures.push(format!("{name}: {e:#}"));
        }
        let (status, _) = server.get("/")?;
        ensure!(status == 200, "the node stopped answering after {name}");
    }
    eprintln!("{ran} scenarios, {} failed", failures.len());
    if !failures.is_empty() {
        bail!(
            "{} of {ran} scenarios failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
    ensure!(filter.is_some() || ran >= 150, "only {ran} scenarios found");
    Ok(())
}
