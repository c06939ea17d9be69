//! `POST /{alias}/_rollover[/{new_index}]`: when the alias's write index
//! meets the request's conditions (or always, without conditions), a new
//! index is created (its name the old one's with the counter at its end
//! increased, unless named; templates apply) and the alias's writes move
//! to it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use quidditch_index::index::AliasMeta;
use quidditch_index::indices::AliasAction;
use quidditch_planner::search::parse_time_value;
use serde_json::{Map, Value, json};

use super::cluster::started_copies;
use super::{ApiError, ApiResult, Params, bool_param, ok_json, parse_body};
use crate::node::Node;

/// What a rollover condition measures of the write index.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Measure {
    Age,
    Docs,
    Size,
    PrimaryShardSize,
    PrimaryShardDocs,
}

/// One rollover condition: what it measures, and its bound as given.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    name: String,
    text: String,
    measure: Measure,
    bound: u64,
    /// `max_*`: met at or over the bound; `min_*`: a bound to reach first.
    max: bool,
}

/// What the write index measures, for its conditions.
#[derive(Debug, Default)]
struct Measures {
    age_ms: u64,
    docs: u64,
    bytes: u64,
    largest_shard_bytes: u64,
    largest_shard_docs: u64,
}

impl Condition {
    fn parse(name: &str, value: &Value) -> ApiResult<Condition> {
        let unknown = || ApiError::unknown_field("conditions", name);
        let (max, measure) = match (name.strip_prefix("max_"), name.strip_prefix("min_")) {
            (Some(measure), _) => (true, measure),
            (None, Some(measure)) => (false, measure),
            (None, None) => return Err(unknown()),
        };
        let measure = match measure {
            "age" => Measure::Age,
            "docs" => Measure::Docs,
            "size" => Measure::Size,
            "primary_shard_size" => Measure::PrimaryShardSize,
            "primary_shard_docs" => Measure::PrimaryShardDocs,
            _ => return Err(unknown()),
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "[{name}] must be a value, not [{other}]"
                )));
            }
        };
        let bound = match measure {
            Measure::Age => u64::try_from(parse_time_value(&text, name)?.as_millis()).unwrap_or(u64::MAX),
            Measure::Docs | Measure::PrimaryShardDocs => text.parse().map_err(|_| {
                ApiError::bad_request(format!("[{name}] must be a number of documents, not [{text}]"))
            })?,
            Measure::Size | Measure::PrimaryShardSize => byte_size(name, &text)?,
        };
        Ok(Condition {
            name: name.to_string(),
            text,
            measure,
            bound,
            max,
        })
    }

    fn met(&self, m: &Measures) -> bool {
        let value = match self.measure {
            Measure::Age => m.age_ms,
            Measure::Docs => m.docs,
            Measure::Size => m.bytes,
            Measure::PrimaryShardSize => m.largest_shard_bytes,
            Measure::PrimaryShardDocs => m.largest_shard_docs,
        };
        value >= self.bound
    }
}

/// Elasticsearch's byte sizes: `512b`, `10kb`, `1.5gb`, ...
fn byte_size(setting: &str, text: &str) -> ApiResult<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let scale: u64 = match unit {
        "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        "pb" => 1 << 50,
        _ => 0,
    };
    match number.parse::<f64>() {
        Ok(n) if scale > 0 && n >= 0.0 => Ok((n * scale as f64) as u64),
        _ => Err(ApiError::new(
            400,
            "parse_exception",
            format!(
                "failed to parse setting [{setting}] with value [{text}] as a size in bytes: unit is missing or unrecognized"
            ),
        )),
    }
}

/// The name after `old`: its counter at the end, plus one, in 6 digits.
fn next_name(old: &str) -> ApiResult<String> {
    let (stem, counter) = old.rsplit_once('-').unwrap_or((old, ""));
    match counter.parse::<u64>() {
        Ok(n) if counter.bytes().all(|b| b.is_ascii_digit()) => Ok(format!("{stem}-{:06}", n + 1)),
        _ => Err(ApiError::bad_request(format!(
            "index name [{old}] does not match pattern '^.*-\\d+$'"
        ))),
    }
}

/// `POST /{alias}/_rollover`.
pub async fn rollover(
    state: State<Arc<Node>>,
    Path(alias): Path<String>,
    query: Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    roll(state, alias, None, query, body).await
}

/// `POST /{alias}/_rollover/{new_index}`.
pub async fn rollover_to(
    state: State<Arc<Node>>,
    Path((alias, new_index)): Path<(String, String)>,
    query: Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    roll(state, alias, Some(new_index), query, body).await
}

async fn roll(
    State(node): State<Arc<Node>>,
    alias: String,
    new_index: Option<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let dry_run = bool_param(&params, "dry_run", false)?;
    let mut conditions = Vec::new();
    let mut create = Map::new();
    if let Some(Value::Object(obj)) = parse_body(&body)? {
        for (key, value) in obj {
            match key.as_str() {
                "conditions" => {
                    let given = value
                        .as_object()
                        .ok_or_else(|| ApiError::bad_request("[conditions] must be an object"))?;
                    for (name, bound) in given {
                        conditions.push(Condition::parse(name, bound)?);
                    }
                }
                "settings" | "mappings" | "aliases" => {
                    create.insert(key, value);
                }
                other => {
                    return Err(ApiError::unknown_field("rollover", other));
                }
            }
        }
    }
    if !conditions.is_empty() && conditions.iter().all(|c| !c.max) {
        return Err(ApiError::new(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: at least one max_* rollover condition must be set when using min_* conditions;",
        ));
    }
    if !node.indices.is_alias(&alias) {
        let what = match node.indices.get(&alias) {
            Ok(_) => "[concrete index]",
            Err(_) => "[null]",
        };
        return Err(ApiError::bad_request(format!(
            "rollover target is a {what} but one of [alias,data_stream] was expected"
        )));
    }
    let old = node.indices.write_index(&alias)?;
    let old_name = old.name();
    let new_name = match new_index {
        Some(name) => name,
        None => next_name(&old_name)?,
    };
    let meta = old.meta();
    let mut measures = Measures {
        age_ms: u64::try_from(chrono::Utc::now().timestamp_millis() - meta.creation_date).unwrap_or(0),
        ..Measures::default()
    };
    let mut shards: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
    for copy in started_copies(&node, std::slice::from_ref(&old)).await? {
        if copy.primary {
            let shard = shards.entry(copy.shard).or_default();
            for segment in &copy.segments {
                shard.0 += segment.docs;
                shard.1 += segment.bytes;
            }
        }
    }
    for (docs, bytes) in shards.values() {
        measures.docs += docs;
        measures.bytes += bytes;
        measures.largest_shard_docs = measures.largest_shard_docs.max(*docs);
        measures.largest_shard_bytes = measures.largest_shard_bytes.max(*bytes);
    }
    let results: Map<String, Value> = conditions
        .iter()
        .map(|c| (format!("[{}: {}]", c.name, c.text), json!(c.met(&measures))))
        .collect();
    let met = conditions.is_empty()
        || (conditions.iter().any(|c| c.max && c.met(&measures))
            && conditions.iter().all(|c| c.max || c.met(&measures)));
    let rolled = met && !dry_run;
    if rolled {
        let indices = Arc::clone(&node.indices);
        let (old_name, new_name) = (old_name.clone(), new_name.clone());
        let marked = old.aliases().get(&alias).and_then(|m| m.is_write_index) == Some(true);
        tokio::task::spawn_blocking(move || -> quidditch_index::Result<()> {
            let created = indices.create(&new_name, Some(&Value::Object(create)))?.name();
            let actions = match marked {
                // The old index stays in the alias, for searches.
                true => vec![
                    AliasAction::Add {
                        indices: vec![new_name],
                        alias: alias.clone(),
                        meta: AliasMeta {
                            is_write_index: Some(true),
                        },
                    },
                    AliasAction::Add {
                        indices: vec![old_name],
                        alias,
                        meta: AliasMeta {
                            is_write_index: Some(false),
                        },
                    },
                ],
                false => vec![
                    AliasAction::Add {
                        indices: vec![new_name],
                        alias: alias.clone(),
                        meta: AliasMeta::default(),
                    },
                    AliasAction::Remove {
                        indices: vec![old_name],
                        aliases: vec![alias],
                        must_exist: None,
                    },
                ],
            };
            // The new index goes again when the alias cannot move to it,
            // so that the rollover can be tried again.
            indices.update_aliases(&actions).inspect_err(|_| {
                if let Err(err) = indices.delete(&created) {
                    tracing::warn!(index = %created, %err, "could not delete the index of a failed rollover");
                }
            })
        })
        .await??;
    }
    Ok(ok_json(&json!({
        "acknowledged": rolled,
        "shards_acknowledged": rolled,
        "old_index": old_name,
        "new_index": new_name,
        "rolled_over": rolled,
        "dry_run": dry_run,
        "lazy": false,
        "conditions": results,
    })))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_and_sizes() -> ApiResult<()> {
        assert_eq!(next_name("logs-000001")?, "logs-000002");
        assert_eq!(next_name("logs-2024.01-9")?, "logs-2024.01-000010");
        assert_eq!(next_name("a-b-1234567")?, "a-b-1234568");
        assert!(next_name("logs").is_err());
        assert!(next_name("logs-x1").is_err());
        assert_eq!(byte_size("max_size", "1.5kb")?, 1536);
        assert_eq!(byte_size("max_size", "50GB")?, 50 << 30);
        assert!(byte_size("max_size", "50").is_err());
        Ok(())
    }

    #[test]
    fn max_conditions_roll_once_min_conditions_hold() -> ApiResult<()> {
        let m = Measures {
            age_ms: Duration::from_secs(3600).as_millis() as u64,
            docs: 10,
            ..Measures::default()
        };
        let docs = Condition::parse("max_docs", &json!(10))?;
        let age = Condition::parse("max_age", &json!("2h"))?;
        let min = Condition::parse("min_docs", &json!("11"))?;
        assert!(docs.met(&m) && !age.met(&m) && !min.met(&m));
        for unknown in ["max_colour", "docs", "max_max_docs", "min_min_age"] {
            assert!(Condition::parse(unknown, &json!(1)).is_err(), "{unknown}");
        }
        Ok(())
    }
}
