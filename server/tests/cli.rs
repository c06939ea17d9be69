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
