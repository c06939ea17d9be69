//! Cluster-wide metadata that belongs to no index: the templates and the
//! persistent cluster settings (`PUT /_cluster/settings`). A node without a
//! cluster store keeps it in its data directory; a cluster keeps it in etcd.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::indices::wildcard_match;
use crate::templates::Templates;

/// `action.auto_create_index`.
pub const AUTO_CREATE_INDEX: &str = "action.auto_create_index";
/// `action.destructive_requires_name`.
pub const DESTRUCTIVE_REQUIRES_NAME: &str = "action.destructive_requires_name";

/// `search.max_buckets`.
pub const SEARCH_MAX_BUCKETS: &str = "search.max_buckets";
/// Elasticsearch's default `search.max_buckets` (as the settings' defaults
/// list it).
pub const DEFAULT_MAX_BUCKETS: usize = 65_536;

/// The cluster settings this node applies, with their defaults.
const SETTINGS: [(&str, &str); 3] = [
    (AUTO_CREATE_INDEX, "true"),
    (DESTRUCTIVE_REQUIRES_NAME, "true"),
    (SEARCH_MAX_BUCKETS, "65536"),
];

/// The metadata of a node or cluster beyond its indices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Index, component and legacy templates.
    #[serde(default)]
    pub templates: Templates,
    /// Persistent cluster settings that were set and not reset (flat keys,
    /// string values).
    #[serde(default)]
    pub settings: Map<String, Value>,
}

/// The `persistent` settings of `PUT /_cluster/settings`, flat, each
/// checked.
pub fn parse_settings(persistent: &Value) -> Result<Map<String, Value>> {
    let flat = flatten("persistent", persistent)?;
    if flat.is_empty() {
        return Err(Error::BadRequest {
            es_type: "action_request_validation_exception",
            reason: "Validation Failed: 1: no settings to update;".into(),
        });
    }
    for (key, value) in &flat {
        check_setting(key, value)?;
    }
    Ok(flat)
}

impl ClusterMetadata {
    /// Applies settings from [`parse_settings`] (a null value resets a
    /// setting to its default).
    pub fn apply_settings(&mut self, flat: &Map<String, Value>) {
        for (key, value) in flat {
            match value {
                Value::Null => self.settings.remove(key),
                value => self.settings.insert(key.clone(), value.clone()),
            };
        }
    }

    /// A setting's value: as set, else its default.
    fn setting(&self, key: &str) -> &str {
        let default = SETTINGS.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| *v);
        self.settings.get(key).and_then(Value::as_str).unwrap_or(default)
    }

    /// The persistent settings as `GET /_cluster/settings` shows them
    /// (nested unless `flat`), with the defaults of the others when asked.
    pub fn settings_to_es(&self, flat: bool, include_defaults: bool) -> Value {
        let shape = |map: &Map<String, Value>| match flat {
            true => Value::Object(map.clone()),
            false => nest(map),
        };
        let mut out = json!({"persistent": shape(&self.settings), "transient": {}});
        if include_defaults {
            let defaults: Map<String, Value> = SETTINGS
                .iter()
                .filter(|(k, _)| !self.settings.contains_key(*k))
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            out["defaults"] = shape(&defaults);
        }
        out
    }

    /// The most buckets a search response may hold, at every level of its
    /// aggregations together (`search.max_buckets`).
    pub fn max_buckets(&self) -> usize {
        // A stored value was checked when it was set.
        self.setting(SEARCH_MAX_BUCKETS)
            .parse()
            .unwrap_or(DEFAULT_MAX_BUCKETS)
    }

    /// Fails unless `action.auto_create_index` lets a write create the
    /// index `name`: `true`, `false`, or patterns (`+logs-*,-*`) of which
    /// the first that matches decides.
    pub fn check_auto_create(&self, name: &str) -> Result<()> {
        let value = self.setting(AUTO_CREATE_INDEX);
        let refused = |why: String| {
            Err(Error::NotFound {
                es_type: "index_not_found_exception",
                reason: format!("no such index [{name}] and {why}"),
            })
        };
        match value {
            "true" => Ok(()),
            "false" => refused(format!("[{AUTO_CREATE_INDEX}] is [false]")),
            patterns => {
                for pattern in patterns.split(',').map(str::trim) {
                    let (allow, pattern) = match pattern.strip_prefix('-') {
                        Some(rest) => (false, rest),
                        None => (true, pattern.strip_prefix('+').unwrap_or(pattern)),
                    };
                    if wildcard_match(pattern, name) {
                        return match allow {
                            true => Ok(()),
                            false => refused(format!(
                                "[{AUTO_CREATE_INDEX}] contains [-{pattern}] which forbids automatic creation of the index"
                            )),
                        };
                    }
                }
                refused(format!("[{AUTO_CREATE_INDEX}] ([{patterns}]) doesn't match"))
            }
        }
    }

    /// Fails when `action.destructive_requires_name` is on and `expr`
    /// names indices by wildcards or `_all`.
    pub fn check_destructive(&self, expr: &str) -> Result<()> {
        let wild = expr
            .split(',')
            .map(str::trim)
            .any(|part| part == "_all" || part.contains('*'));
        if wild && self.setting(DESTRUCTIVE_REQUIRES_NAME) == "true" {
            return Err(Error::illegal_argument(
                "Wildcard expressions or all indices are not allowed",
            ));
        }
        Ok(())
    }
}

/// The settings object `what` as flat keys (joined at dots) with string
/// values, or null to reset; lists become comma-separated strings.
pub(crate) fn flatten(what: &str, value: &Value) -> Result<Map<String, Value>> {
    fn walk(prefix: &str, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(obj) => {
                for (k, v) in obj {
                    let key = match prefix.is_empty() {
                        true => k.clone(),
                        false => format!("{prefix}.{k}"),
                    };
                    walk(&key, v, out);
                }
            }
            Value::Null | Value::String(_) => {
                out.insert(prefix.to_string(), value.clone());
            }
            Value::Bool(_) | Value::Number(_) => {
                out.insert(prefix.to_string(), Value::String(value.to_string()));
            }
            Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
                out.insert(prefix.to_string(), Value::String(parts.join(",")));
            }
        }
    }
    if !value.is_object() {
        return Err(Error::illegal_argument(format!("[{what}] must be an object")));
    }
    let mut flat = Map::new();
    walk("", value, &mut flat);
    Ok(flat)
}

fn check_setting(key: &str, value: &Value) -> Result<()> {
    if !SETTINGS.iter().any(|(k, _)| *k == key) {
        return Err(Error::illegal_argument(format!(
            "persistent setting [{key}], not recognized"
        )));
    }
    let Some(text) = value.as_str() else {
        return Ok(());
    };
    match key {
        DESTRUCTIVE_REQUIRES_NAME if text != "true" && text != "false" => Err(Error::illegal_argument(
            format!("Failed to parse value [{text}] as only [true] or [false] are allowed."),
        )),
        SEARCH_MAX_BUCKETS => match text.parse::<i64>() {
            Ok(n) if n < 0 => Err(Error::illegal_argument(format!(
                "Failed to parse value [{text}] for setting [{key}] must be >= 0"
            ))),
            // An int setting: a value past `i32::MAX` does not parse.
            Ok(n) if n <= i64::from(i32::MAX) => Ok(()),
            _ => Err(Error::illegal_argument(format!(
                "Failed to parse value [{text}] for setting [{key}]"
            ))),
        },
        AUTO_CREATE_INDEX if text.is_empty() => Err(Error::illegal_argument(format!(
            "Can't parse [{text}] for setting [{AUTO_CREATE_INDEX}] must be either [true, false, or a comma separated list of index patterns]"
        ))),
        _ => Ok(()),
    }
}

/// Flat keys nested at their dots, as Elasticsearch shows settings.
pub fn nest(flat: &Map<String, Value>) -> Value {
    let mut out = Value::Object(Map::new());
    for (key, value) in flat {
        let mut at = &mut out;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let Value::Object(obj) = at else { break };
            if parts.peek().is_none() {
                obj.insert(part.to_string(), value.clone());
                break;
            }
            at = obj.entry(part.to_string()).or_insert_with(|| json!({}));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(meta: &mut ClusterMetadata, persistent: Value) -> Result<()> {
        meta.apply_settings(&parse_settings(&persistent)?);
        Ok(())
    }

    #[test]
    fn auto_create_patterns_decide_by_the_first_match() -> Result<()> {
        let mut meta = ClusterMetadata::default();
        meta.check_auto_create("anything")?;
        put(
            &mut meta,
            json!({"action": {"auto_create_index": "+logs-*,-logs-x*,+metrics"}}),
        )?;
        meta.check_auto_create("logs-1")?;
        meta.check_auto_create("metrics")?;
        assert!(meta.check_auto_create("logs-x1").is_ok());
        assert!(meta.check_auto_create("other").is_err());
        put(&mut meta, json!({"action.auto_create_index": "-logs-x*,+logs-*"}))?;
        assert!(meta.check_auto_create("logs-x1").is_err());
        put(&mut meta, json!({"action.auto_create_index": false}))?;
        assert!(meta.check_auto_create("logs-1").is_err());
        put(&mut meta, json!({"action.auto_create_index": null}))?;
        meta.check_auto_create("logs-1")?;
        assert!(put(&mut meta, json!({"cluster.max_shards_per_node": 10})).is_err());
        assert!(put(&mut meta, json!({"cluster.max_shards_per_node": null})).is_err());
        assert!(put(&mut meta, json!({})).is_err());
        Ok(())
    }

    #[test]
    fn max_buckets_is_an_int_setting_of_at_least_0() -> Result<()> {
        let mut meta = ClusterMetadata::default();
        assert_eq!(meta.max_buckets(), DEFAULT_MAX_BUCKETS);
        put(&mut meta, json!({"search.max_buckets": 0}))?;
        assert_eq!(meta.max_buckets(), 0);
        put(&mut meta, json!({"search": {"max_buckets": "2147483647"}}))?;
        assert_eq!(meta.max_buckets(), 2_147_483_647);
        for (value, reason) in [
            (
                json!(-1),
                "Failed to parse value [-1] for setting [search.max_buckets] must be >= 0",
            ),
            (
                json!(2_147_483_648_i64),
                "Failed to parse value [2147483648] for setting [search.max_buckets]",
            ),
            (
                json!("lots"),
                "Failed to parse value [lots] for setting [search.max_buckets]",
            ),
        ] {
            match put(&mut meta, json!({"search.max_buckets": value})) {
                Err(Error::BadRequest { reason: got, .. }) => assert_eq!(got, reason),
                other => panic!("{value} gave {other:?}"),
            }
        }
        assert_eq!(meta.max_buckets(), 2_147_483_647);
        put(&mut meta, json!({"search.max_buckets": null}))?;
        assert_eq!(meta.max_buckets(), DEFAULT_MAX_BUCKETS);
        Ok(())
    }
}
