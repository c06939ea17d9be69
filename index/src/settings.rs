//! Index settings: `number_of_shards`, `number_of_replicas`, `refresh_interval`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// Settings of an index.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IndexSettings {
    /// Number of primary shards (default 1).
    pub number_of_shards: u32,
    /// Number of replicas of each shard (default 0 on a single node).
    pub number_of_replicas: u32,
    /// How often writes become searchable; `None` disables periodic refresh (`-1`).
    #[serde(with = "interval_serde")]
    pub refresh_interval: Option<Duration>,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            number_of_shards: 1,
            number_of_replicas: 0,
            refresh_interval: Some(Duration::from_secs(1)),
        }
    }
}

impl IndexSettings {
    /// Parses Elasticsearch's `settings` object, flat (`{"number_of_shards": 2}`)
    /// or nested under `index` (`{"index": {"number_of_shards": "2"}}`).
    pub fn from_es(value: &Value) -> Result<IndexSettings> {
        let mut settings = IndexSettings::default();
        let obj = value
            .as_object()
            .ok_or_else(|| Error::illegal_argument("[settings] must be an object"))?;
        let mut flat = Map::new();
        for (k, v) in obj {
            match (k.as_str(), v) {
                ("index", Value::Object(inner)) => {
                    for (ik, iv) in inner {
                        flat.insert(ik.clone(), iv.clone());
                    }
                }
                (key, v) => {
                    flat.insert(key.strip_prefix("index.").unwrap_or(key).to_string(), v.clone());
                }
            }
        }
        for (key, v) in &flat {
            match key.as_str() {
                "number_of_shards" => {
                    let n = as_u32(key, v)?;
                    if n == 0 || n > 1024 {
                        return Err(Error::illegal_argument(format!(
                            "Failed to parse value [{n}] for setting [index.number_of_shards] must be >= 1 and <= 1024"
                        )));
                    }
                    settings.number_of_shards = n;
                }
                "number_of_replicas" => settings.number_of_replicas = as_u32(key, v)?,
                "refresh_interval" => settings.refresh_interval = parse_interval(v)?,
                other => {
                    return Err(Error::illegal_argument(format!(
                        "unknown setting [index.{other}] please check that any required plugins are installed, or check the breaking changes documentation for removed settings"
                    )));
                }
            }
        }
        Ok(settings)
    }

    /// Renders the settings as Elasticsearch does (strings under `index`).
    pub fn to_es(&self, name: &str, uuid: &str, creation_date: i64) -> Value {
        json!({"index": {
            "number_of_shards": self.number_of_shards.to_string(),
            "number_of_replicas": self.number_of_replicas.to_string(),
            "refresh_interval": render_interval(self.refresh_interval),
            "provided_name": name,
            "uuid": uuid,
            "creation_date": creation_date.to_string(),
        }})
    }
}

fn as_u32(key: &str, v: &Value) -> Result<u32> {
    let parsed = match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        Error::illegal_argument(format!("Failed to parse value [{v}] for setting [index.{key}]"))
    })
}

/// Parses an Elasticsearch time value such as `1s`, `500ms`, `2m` or `-1`.
pub fn parse_interval(v: &Value) -> Result<Option<Duration>> {
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if s == "-1" {
        return Ok(None);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad_interval(&s))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => return Err(bad_interval(&s)),
    };
    Ok(Some(d))
}

fn bad_interval(s: &str) -> Error {
    Error::illegal_argument(format!(
        "failed to parse setting [index.refresh_interval] with value [{s}] as a time value: unit is missing or unrecognized"
    ))
}

fn render_interval(d: Option<Duration>) -> String {
    match d {
        None => "-1".into(),
        Some(d) if d.as_millis() % 1000 == 0 => format!("{}s", d.as_secs()),
        Some(d) => format!("{}ms", d.as_millis()),
    }
}

mod interval_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_and_nested_settings() -> Result<()> {
        let s = IndexSettings::from_es(&json!({"number_of_shards": 3, "refresh_interval": "500ms"}))?;
        assert_eq!(s.number_of_shards, 3);
        assert_eq!(s.refresh_interval, Some(Duration::from_millis(500)));
        let s =
            IndexSettings::from_es(&json!({"index": {"number_of_shards": "2", "refresh_interval": "-1"}}))?;
        assert_eq!(s.number_of_shards, 2);
        assert_eq!(s.refresh_interval, None);
        assert!(IndexSettings::from_es(&json!({"number_of_shards": 0})).is_err());
        assert!(IndexSettings::from_es(&json!({"refresh_interval": "soon"})).is_err());
        assert!(IndexSettings::from_es(&json!({"bogus": 1})).is_err());
        Ok(())
    }
}
