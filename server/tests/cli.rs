//! `quidditch sql` against a data directory and against a running node, and
//! SQL answers over HTTP as CSV and text.

mod common;

use std::process::Command;

use anyhow::Result;
use common::Server;
use serde_json::json;

fn quidditch(args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_quidditch"))
        .args(args)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

#[test]
fn sql_command_prints_a_table() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Server::start(dir.path())?;
    let (status, _) = s.bulk(
        "/pets/_bulk?refresh=true",
        &[
            json!({"index": {"_id": "1"}}),
            json!({"kind": "cat", "age": 3}),
            json!({"index": {"_id": "2"}}),
            json!({"kind": "dog", "age": 5}),
            json!({"index": {"_id": "3"}}),
            json!({"kind": "cat", "age": 7}),
        ],
    )?;
    assert_eq!(status, 200);
    let query =
        "SELECT \"kind.keyword\" AS kind, count(*) AS n, max(age) AS oldest FROM pets GROUP BY 1 ORDER BY 1";
    let expected = "\
+------+---+--------+
| kind | n | oldest |
+------+---+--------+
| cat  | 2 | 7      |
| dog  | 1 | 5      |
+------+---+--------+
";
    let (ok, out, err) = quidditch(&["sql", "--url", &s.url, query])?;
    assert!(ok, "{err}");
    assert_eq!(out, expected);
    assert_eq!(s.sql_text(query, "csv")?, "kind,n,oldest\ncat,2,7\ndog,1,5\n");
    assert_eq!(s.sql_text(query, "txt")?, expected);

    // With the server running, the data directory is in use and the command says so.
    let data_dir = dir.path().to_string_lossy().to_string();
    let (ok, _, err) = quidditch(&["sql", "--data-dir", &data_dir, query])?;
    assert!(!ok);
    assert!(err.contains("pass --url"), "{err}");

    assert!(s.terminate()?.success());
    let (ok, out, err) = quidditch(&["sql", "--data-dir", &data_dir, query])?;
    assert!(ok, "{err}");
    assert_eq!(out, expected);
    let (ok, _, err) = quidditch(&["sql", "--data-dir", &data_dir, "SELECT nope FROM pets"])?;
    assert!(!ok);
    assert!(err.contains("nope"), "{err}");
    Ok(())
}

/// `quidditch load --data-dir` writes into a stopped node's data directory
/// in its own process: the node started on it again serves what it loaded,
/// rejected documents fail the command beside the loaded ones, and a
/// directory in use by a running node is refused without a change.
#[test]
fn load_into_a_data_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().to_string_lossy().to_string();
    let s = Server::start(dir.path())?;
    let good = dir.path().join("good.ndjson");
    std::fs::write(
        &good,
        (0..25)
            .map(|i| format!("{}\n", json!({"n": i, "word": format!("w{}", i % 2)})))
            .collect::<String>(),
    )?;
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, "{\"n\": 1}\n{\"n\": \"one\"}\n{\"n\": 3}\n")?;
    let load = |index: &str, file: &std::path::Path| {
        let file = file.to_string_lossy().to_string();
        quidditch(&[
            "load",
            "--quiet",
            "--index",
            index,
            "--data-dir",
            &data_dir,
            "--batch-size",
            "4",
            &file,
        ])
    };

    // The running node holds the directory even before it has an index.
    let (ok, _, err) = load("fresh", &good)?;
    assert!(!ok);
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(s.get("/fresh")?.0, 404);
    let (status, _) = s.put(
        "/strict",
        &json!({"mappings": {"properties": {"n": {"type": "integer"}}}}),
    )?;
    assert_eq!(status, 200);
    let (ok, _, err) = load("strict", &good)?;
    assert!(!ok);
    assert!(err.contains("load through it with --url"), "{err}");
    assert_eq!(s.count("strict")?, 0);

    assert!(s.terminate()?.success());
    let (ok, out, err) = load("strict", &good)?;
    assert!(ok, "{err}");
    assert!(out.contains("loaded 25 documents into [strict]"), "{out}");
    let (ok, out, err) = load("strict", &bad)?;
    assert!(!ok);
    assert!(out.contains("1 failed"), "{out}");
    assert!(
        err.contains("failed to parse field [n] of type [integer]"),
        "{err}"
    );
    let (ok, out, err) = load("fresh", &good)?;
    assert!(ok, "{err}");
    assert!(out.contains("loaded 25 documents into [fresh]"), "{out}");

    // With ids from a field, a second load of the same file replaces its
    // documents; one without the field is rejected beside the others.
    let keyed = dir.path().join("keyed.ndjson");
    std::fs::write(
        &keyed,
        "{\"key\": \"a\", \"n\": 1}\n{\"key\": 7, \"n\": 2}\n{\"n\": 3}\n{\"key\": 2.5, \"n\": 4}\n",
    )?;
    let keyed = keyed.to_string_lossy().to_string();
    let load_keyed = |index: &str, target: &[&str]| -> Result<()> {
        for _ in 0..2 {
            let mut args = vec!["load", "--quiet", "--index", index, "--id-field", "key", &keyed];
            args.extend(target);
            let (ok, out, err) = quidditch(&args)?;
            assert!(!ok);
            assert!(out.contains("2 failed"), "{out}");
            assert!(
                err.contains("document has no string or integer [key] to take its _id from"),
                "{err}"
            );
        }
        Ok(())
    };
    load_keyed("keyed", &["--data-dir", &data_dir])?;

    let s = Server::start(dir.path())?;
    load_keyed("keyed_node", &["--url", &s.url])?;
    for index in ["keyed", "keyed_node"] {
        assert_eq!(
            s.sql_rows(&format!("SELECT _id, n FROM {index} ORDER BY n"))?,
            vec![json!(["a", 1]), json!(["7", 2])]
        );
    }
    assert_eq!(s.count("strict")?, 27);
    assert_eq!(
        s.sql_rows("SELECT count(*), sum(n) FROM strict WHERE n < 25")?,
        vec![json!([27, (0..25).sum::<i64>() + 4])]
    );
    assert_eq!(
        s.sql_rows("SELECT \"word.keyword\", count(*) FROM fresh GROUP BY 1 ORDER BY 1")?,
        vec![json!(["w0", 13]), json!(["w1", 12])]
    );
    let (status, mapping) = s.get("/fresh/_mapping")?;
    assert_eq!(status, 200);
    assert_eq!(mapping["fresh"]["mappings"]["properties"]["n"]["type"], "long");

    // Through a node, the items the node fails are counted and reported.
    let bad_file = bad.to_string_lossy().to_string();
    let (ok, out, err) = quidditch(&["load", "--quiet", "--index", "strict", "--url", &s.url, &bad_file])?;
    assert!(!ok);
    assert!(
        out.contains("loaded 2 documents into [strict]") && out.contains("1 failed"),
        "{out}"
    );
    assert!(
        err.contains("failed to parse field [n] of type [integer]"),
        "{err}"
    );
    Ok(())
}
