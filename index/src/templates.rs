//! Index templates and component templates, as Elasticsearch composes them:
//! an index created under a name that an index template's patterns match
//! takes the settings, mappings and aliases of the template's component
//! templates (in the order it lists them), then its own, then the create
//! request's. Of several matching index templates, the one of highest
//! priority applies; two templates of one priority may not both match a
//! name. Legacy templates (`_template`) apply only when no index template
//! matches: all that match, in ascending `order`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::indices::{alias_meta, wildcard_match};
use crate::mapping::Mapping;
use crate::metadata::{flatten, nest};
use crate::settings::IndexSettings;

/// What a template gives an index: settings (flat, `index.`-prefixed keys
/// with string values), mappings and aliases (as given).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settings: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mappings: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aliases: Option<Map<String, Value>>,
}

/// A composable index template (`PUT /_index_template/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IndexTemplate {
    index_patterns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<TemplateBody>,
    #[serde(default)]
    composed_of: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ignore_missing_component_templates: Vec<String>,
}

/// A component template (`PUT /_component_template/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentTemplate {
    template: TemplateBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<Value>,
}

/// A legacy template (`PUT /_template/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyTemplate {
    index_patterns: Vec<String>,
    #[serde(default)]
    order: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(default)]
    body: TemplateBody,
}

/// Every template of a node (or of a cluster, kept in etcd).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Templates {
    #[serde(default)]
    index: BTreeMap<String, IndexTemplate>,
    #[serde(default)]
    component: BTreeMap<String, ComponentTemplate>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    legacy: BTreeMap<String, LegacyTemplate>,
}

/// Which kind of template a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `_index_template`.
    Index,
    /// `_component_template`.
    Component,
    /// `_template`.
    Legacy,
}

impl Kind {
    /// How Elasticsearch's messages name the kind.
    fn words(self) -> &'static str {
        match self {
            Kind::Index | Kind::Legacy => "index template",
            Kind::Component => "component template",
        }
    }

    /// How Elasticsearch's "missing" messages name the kind.
    fn key(self) -> &'static str {
        match self {
            Kind::Index | Kind::Legacy => "index_template",
            Kind::Component => "component_template",
        }
    }
}

fn parse_error(reason: String) -> Error {
    Error::BadRequest {
        es_type: "x_content_parse_exception",
        reason,
    }
}

fn not_found(reason: String) -> Error {
    Error::NotFound {
        es_type: "resource_not_found_exception",
        reason,
    }
}

impl TemplateBody {
    /// Names the index in its aliases: `{index}` in an alias name stands
    /// for the name of the index the template is applied to.
    fn name_aliases_for(&mut self, index: &str) {
        if let Some(aliases) = self.aliases.take() {
            let aliases = aliases
                .into_iter()
                .map(|(name, alias)| (name.replace("{index}", index), alias))
                .collect();
            self.aliases = Some(aliases);
        }
    }

    fn from_es(value: &Value) -> Result<TemplateBody> {
        let obj = value
            .as_object()
            .ok_or_else(|| parse_error("[template] must be an object".into()))?;
        let mut body = TemplateBody::default();
        for (key, value) in obj {
            match key.as_str() {
                "settings" => body.settings = Some(flat_settings(value)?),
                "mappings" => {
                    if !value.is_object() {
                        return Err(Error::mapper_parsing("[mappings] must be an object"));
                    }
                    body.mappings = Some(value.clone());
                }
                "aliases" => {
                    let aliases = value
                        .as_object()
                        .ok_or_else(|| Error::illegal_argument("[aliases] must be an object"))?;
                    for (alias, def) in aliases {
                        alias_meta(alias, def)?;
                    }
                    body.aliases = Some(aliases.clone());
                }
                "lifecycle" | "data_stream_options" => {
                    return Err(Error::illegal_argument(format!(
                        "[template.{key}] is not supported: this node has no data streams"
                    )));
                }
                other => return Err(parse_error(format!("[template] unknown field [{other}]"))),
            }
        }
        Ok(body)
    }

    fn to_es(&self) -> Value {
        let mut out = Map::new();
        if let Some(settings) = &self.settings {
            out.insert("settings".into(), nest(settings));
        }
        if let Some(mappings) = &self.mappings {
            out.insert("mappings".into(), mappings.clone());
        }
        if let Some(aliases) = &self.aliases {
            out.insert("aliases".into(), Value::Object(aliases.clone()));
        }
        Value::Object(out)
    }

    /// Lays `over` on top of this body: settings by key (a null one resets
    /// the key), mappings field by field, aliases by name.
    fn overlay(&mut self, over: &TemplateBody) {
        if let Some(settings) = &over.settings {
            let mine = self.settings.get_or_insert_with(Map::new);
            for (key, value) in settings {
                match value {
                    Value::Null => mine.remove(key),
                    _ => mine.insert(key.clone(), value.clone()),
                };
            }
        }
        if let Some(mappings) = &over.mappings {
            match &mut self.mappings {
                Some(mine) => merge_mappings(mine, mappings),
                None => self.mappings = Some(mappings.clone()),
            }
        }
        if let Some(aliases) = &over.aliases {
            let mine = self.aliases.get_or_insert_with(Map::new);
            mine.extend(aliases.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    /// Fails unless an index could be created with this body.
    fn check(&self) -> Result<()> {
        if let Some(settings) = &self.settings {
            let set = settings.iter().filter(|(_, v)| !v.is_null());
            IndexSettings::from_es(&Value::Object(set.map(|(k, v)| (k.clone(), v.clone())).collect()))?;
        }
        if let Some(mappings) = &self.mappings {
            Mapping::from_es(mappings)?;
        }
        Ok(())
    }

    /// The body of a create-index request.
    fn into_create_body(self) -> Value {
        let mut out = Map::new();
        if let Some(settings) = self.settings {
            out.insert("settings".into(), Value::Object(settings));
        }
        if let Some(mappings) = self.mappings {
            out.insert("mappings".into(), mappings);
        }
        if let Some(aliases) = self.aliases {
            out.insert("aliases".into(), Value::Object(aliases));
        }
        Value::Object(out)
    }
}

/// Settings as flat `index.`-prefixed keys with string values, from either
/// of Elasticsearch's forms (`{"index": {"number_of_shards": 2}}` or
/// `{"number_of_shards": "2"}`).
fn flat_settings(value: &Value) -> Result<Map<String, Value>> {
    Ok(flatten("settings", value)?
        .into_iter()
        .map(|(k, v)| match k.starts_with("index.") {
            true => (k, v),
            false => (format!("index.{k}"), v),
        })
        .collect())
}

/// Merges mappings as template composition does: object fields merge
/// field by field, any other field is replaced whole by the later
/// definition, and other keys (`dynamic`, `_source`, ...) by the later one.
fn merge_mappings(base: &mut Value, over: &Value) {
    let (Value::Object(base), Value::Object(over)) = (base, over) else {
        return;
    };
    for (key, value) in over {
        match (key.as_str(), base.get_mut(key)) {
            ("properties", Some(Value::Object(mine))) => {
                let Value::Object(theirs) = value else {
                    base.insert(key.clone(), value.clone());
                    continue;
                };
                for (field, def) in theirs {
                    match mine.get_mut(field) {
                        Some(existing) if is_object_field(existing) && is_object_field(def) => {
                            merge_mappings(existing, def)
                        }
                        _ => {
                            mine.insert(field.clone(), def.clone());
                        }
                    }
                }
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Whether a field definition is an object (sub-fields under `properties`).
fn is_object_field(def: &Value) -> bool {
    def.get("properties").is_some() && def.get("type").is_none_or(|t| t == "object")
}

/// Whether a pattern of `a` and one of `b` can match the same name.
fn any_overlap(a: &[String], b: &[String]) -> bool {
    a.iter().any(|p| b.iter().any(|q| patterns_overlap(p, q)))
}

/// Whether some name matches both `*`-patterns.
fn patterns_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // reach[i][j]: some string takes a[..i] and b[..j] to the same point.
    let mut reach = vec![vec![false; b.len() + 1]; a.len() + 1];
    reach[0][0] = true;
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            if !reach[i][j] {
                continue;
            }
            let (x, y) = (a.get(i), b.get(j));
            if x == Some(&b'*') {
                reach[i + 1][j] = true;
            }
            if y == Some(&b'*') {
                reach[i][j + 1] = true;
            }
            match (x, y) {
                (Some(&b'*'), Some(&c)) if c != b'*' => reach[i][j + 1] = true,
                (Some(&c), Some(&b'*')) if c != b'*' => reach[i + 1][j] = true,
                (Some(&c), Some(&d)) if c == d => reach[i + 1][j + 1] = true,
                _ => {}
            }
        }
    }
    reach[a.len()][b.len()]
}

/// Whether one of `patterns` matches the index name `index`.
fn matches_any(patterns: &[String], index: &str) -> bool {
    patterns.iter().any(|p| wildcard_match(p, index))
}

fn string_list(key: &str, value: &Value) -> Result<Vec<String>> {
    let list = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| parse_error(format!("[{key}] must be a list of strings")))?,
        _ => return Err(parse_error(format!("[{key}] must be a list of strings"))),
    };
    Ok(list)
}

fn version(value: &Value) -> Result<i64> {
    value
        .as_i64()
        .ok_or_else(|| parse_error(format!("[version] must be an integer, not [{value}]")))
}

fn meta(value: &Value) -> Result<Value> {
    match value {
        Value::Object(_) => Ok(value.clone()),
        _ => Err(parse_error("[_meta] must be an object".into())),
    }
}

impl IndexTemplate {
    /// Parses the body of `PUT /_index_template/{name}`.
    pub fn from_es(name: &str, value: &Value) -> Result<IndexTemplate> {
        let obj = value
            .as_object()
            .ok_or_else(|| parse_error("request body must be an object".into()))?;
        let mut template = IndexTemplate::default();
        for (key, value) in obj {
            match key.as_str() {
                "index_patterns" => template.index_patterns = string_list(key, value)?,
                "template" => template.template = Some(TemplateBody::from_es(value)?),
                "composed_of" => template.composed_of = string_list(key, value)?,
                "ignore_missing_component_templates" => {
                    template.ignore_missing_component_templates = string_list(key, value)?
                }
                "priority" => {
                    template.priority = Some(value.as_u64().ok_or_else(|| {
                        Error::illegal_argument(format!(
                            "index template priority requires a non-negative integer, got [{value}]"
                        ))
                    })?)
                }
                "version" => template.version = Some(version(value)?),
                "_meta" => template.meta = Some(meta(value)?),
                "data_stream" => {
                    return Err(Error::illegal_argument(format!(
                        "index template [{name}] has [data_stream]: this node has no data streams"
                    )));
                }
                "allow_auto_create" | "deprecated" => {
                    return Err(Error::illegal_argument(format!(
                        "index template [{name}]: [{key}] is not supported"
                    )));
                }
                other => {
                    return Err(parse_error(format!("[index_template] unknown field [{other}]")));
                }
            }
        }
        if template.index_patterns.is_empty() {
            return Err(Error::BadRequest {
                es_type: "action_request_validation_exception",
                reason: "Validation Failed: 1: index patterns are missing;".into(),
            });
        }
        for pattern in &template.index_patterns {
            if let Some(c) = pattern.chars().find(|c| " ,\"\\/?<>|#".contains(*c)) {
                return Err(Error::illegal_argument(format!(
                    "index_template [{name}] invalid, cause [Validation Failed: 1: index_pattern [{pattern}] \
                     must not contain the character [{c}];]"
                )));
            }
            if pattern.starts_with('_') {
                return Err(Error::illegal_argument(format!(
                    "index_template [{name}] invalid, cause [Validation Failed: 1: index_pattern [{pattern}] \
                     must not start with '_';]"
                )));
            }
        }
        Ok(template)
    }

    /// The template as `GET /_index_template` shows it.
    pub fn to_es(&self) -> Value {
        let mut out = Map::new();
        out.insert("index_patterns".into(), json!(self.index_patterns));
        if let Some(body) = &self.template {
            out.insert("template".into(), body.to_es());
        }
        out.insert("composed_of".into(), json!(self.composed_of));
        if let Some(priority) = self.priority {
            out.insert("priority".into(), json!(priority));
        }
        if let Some(version) = self.version {
            out.insert("version".into(), json!(version));
        }
        if let Some(meta) = &self.meta {
            out.insert("_meta".into(), meta.clone());
        }
        if !self.ignore_missing_component_templates.is_empty() {
            out.insert(
                "ignore_missing_component_templates".into(),
                json!(self.ignore_missing_component_templates),
            );
        }
        Value::Object(out)
    }

    fn matches(&self, index: &str) -> bool {
        matches_any(&self.index_patterns, index)
    }

    fn priority(&self) -> u64 {
        self.priority.unwrap_or(0)
    }
}

impl ComponentTemplate {
    /// Parses the body of `PUT /_component_template/{name}`.
    pub fn from_es(value: &Value) -> Result<ComponentTemplate> {
        let obj = value
            .as_object()
            .ok_or_else(|| parse_error("request body must be an object".into()))?;
        let mut template = None;
        let (mut version_of, mut meta_of) = (None, None);
        for (key, value) in obj {
            match key.as_str() {
                "template" => template = Some(TemplateBody::from_es(value)?),
                "version" => version_of = Some(version(value)?),
                "_meta" => meta_of = Some(meta(value)?),
                "deprecated" => {
                    return Err(Error::illegal_argument(
                        "component template: [deprecated] is not supported",
                    ));
                }
                other => {
                    return Err(parse_error(format!(
                        "[component_template] unknown field [{other}]"
                    )));
                }
            }
        }
        let template = template.ok_or_else(|| parse_error("Required [template]".into()))?;
        template.check()?;
        Ok(ComponentTemplate {
            template,
            version: version_of,
            meta: meta_of,
        })
    }

    /// The template as `GET /_component_template` shows it.
    pub fn to_es(&self) -> Value {
        let mut out = Map::new();
        out.insert("template".into(), self.template.to_es());
        if let Some(version) = self.version {
            out.insert("version".into(), json!(version));
        }
        if let Some(meta) = &self.meta {
            out.insert("_meta".into(), meta.clone());
        }
        Value::Object(out)
    }
}

impl LegacyTemplate {
    /// Parses the body of `PUT /_template/{name}`.
    pub fn from_es(value: &Value) -> Result<LegacyTemplate> {
        let obj = value
            .as_object()
            .ok_or_else(|| parse_error("request body must be an object".into()))?;
        let mut template = LegacyTemplate::default();
        let mut body = Map::new();
        for (key, value) in obj {
            match key.as_str() {
                "index_patterns" => template.index_patterns = string_list(key, value)?,
                "order" => {
                    template.order = value
                        .as_i64()
                        .ok_or_else(|| parse_error(format!("[order] must be an integer, not [{value}]")))?
                }
                "version" => template.version = Some(version(value)?),
                "settings" | "mappings" | "aliases" => {
                    body.insert(key.clone(), value.clone());
                }
                other => {
                    return Err(Error::illegal_argument(format!(
                        "unknown key [{other}] in the template"
                    )));
                }
            }
        }
        if template.index_patterns.is_empty() {
            return Err(Error::BadRequest {
                es_type: "action_request_validation_exception",
                reason: "Validation Failed: 1: index patterns are missing;".into(),
            });
        }
        template.body = TemplateBody::from_es(&Value::Object(body))?;
        template.body.check()?;
        Ok(template)
    }

    /// The template as `GET /_template` shows it.
    pub fn to_es(&self) -> Value {
        let shown = self.body.to_es();
        let mut out = json!({
            "order": self.order,
            "index_patterns": self.index_patterns,
            "settings": shown.get("settings").cloned().unwrap_or_else(|| json!({})),
            "mappings": shown.get("mappings").cloned().unwrap_or_else(|| json!({})),
            "aliases": shown.get("aliases").cloned().unwrap_or_else(|| json!({})),
        });
        if let Some(version) = self.version {
            out["version"] = json!(version);
        }
        out
    }
}

impl Templates {
    /// The names of `kind`'s templates that `names` (a comma-separated list
    /// with wildcards; `None`: all) names, failing with a 404 when a name
    /// without a wildcard names none.
    pub fn select(&self, kind: Kind, names: Option<&str>) -> Result<Vec<String>> {
        let all: Vec<&String> = match kind {
            Kind::Index => self.index.keys().collect(),
            Kind::Component => self.component.keys().collect(),
            Kind::Legacy => self.legacy.keys().collect(),
        };
        let Some(names) = names else {
            return Ok(all.into_iter().cloned().collect());
        };
        let mut out = Vec::new();
        for pattern in names.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let found: Vec<&String> = all
                .iter()
                .copied()
                .filter(|n| wildcard_match(pattern, n))
                .collect();
            if found.is_empty() && !pattern.contains('*') {
                return Err(not_found(format!(
                    "{} matching [{pattern}] not found",
                    kind.words()
                )));
            }
            out.extend(found.into_iter().cloned());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `GET /_index_template`, `GET /_component_template` or `GET /_template` of `names`.
    pub fn to_es(&self, kind: Kind, names: &[String]) -> Value {
        match kind {
            Kind::Index => json!({"index_templates": names
                .iter()
                .filter_map(|n| Some(json!({"name": n, "index_template": self.index.get(n)?.to_es()})))
                .collect::<Vec<_>>()}),
            Kind::Component => json!({"component_templates": names
                .iter()
                .filter_map(|n| Some(json!({"name": n, "component_template": self.component.get(n)?.to_es()})))
                .collect::<Vec<_>>()}),
            Kind::Legacy => Value::Object(
                names
                    .iter()
                    .filter_map(|n| Some((n.clone(), self.legacy.get(n)?.to_es())))
                    .collect(),
            ),
        }
    }

    /// Stores an index template, when its component templates exist, no
    /// template of its priority matches a name it matches, and what it
    /// composes to would create an index. With `create`, an existing
    /// template of the name is an error.
    pub fn put_index(&mut self, name: &str, template: IndexTemplate, create: bool) -> Result<()> {
        self.check_put(Kind::Index, name, create)?;
        self.check_index(name, &template)?;
        self.index.insert(name.to_string(), template);
        Ok(())
    }

    /// Fails unless index template `template` could be stored as `name`
    /// (see [`Templates::put_index`]).
    fn check_index(&self, name: &str, template: &IndexTemplate) -> Result<()> {
        let missing: Vec<&str> = template
            .composed_of
            .iter()
            .filter(|c| {
                !self.component.contains_key(*c) && !template.ignore_missing_component_templates.contains(c)
            })
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Error::BadRequest {
                es_type: "invalid_index_template_exception",
                reason: format!(
                    "index_template [{name}] invalid, cause [index template [{name}] specifies component \
                     templates [{}] that do not exist]",
                    missing.join(", ")
                ),
            });
        }
        let same_priority: Vec<(&String, &IndexTemplate)> = self
            .index
            .iter()
            .filter(|(other, t)| {
                *other != name
                    && t.priority() == template.priority()
                    && any_overlap(&t.index_patterns, &template.index_patterns)
            })
            .collect();
        if !same_priority.is_empty() {
            let names: Vec<&str> = same_priority.iter().map(|(n, _)| n.as_str()).collect();
            let patterns: Vec<String> = same_priority
                .iter()
                .map(|(n, t)| format!("{n} => [{}]", t.index_patterns.join(", ")))
                .collect();
            return Err(Error::illegal_argument(format!(
                "index template [{name}] has index patterns [{}] matching patterns from existing templates [{}] \
                 with patterns ({}) that have the same priority [{}], multiple index templates may not match \
                 during index creation, please use a different priority",
                template.index_patterns.join(", "),
                names.join(", "),
                patterns.join(","),
                template.priority()
            )));
        }
        self.compose(template)
            .check()
            .map_err(|err| composition_error(name, &err))
    }

    /// Stores a component template, when every index template made of it
    /// still composes to what would create an index.
    pub fn put_component(&mut self, name: &str, template: ComponentTemplate, create: bool) -> Result<()> {
        self.check_put(Kind::Component, name, create)?;
        let old = self.component.insert(name.to_string(), template);
        let broken = self
            .index
            .iter()
            .filter(|(_, t)| t.composed_of.iter().any(|c| c == name))
            .find_map(|(users, t)| Some((users, self.compose(t).check().err()?)));
        if let Some((user, err)) = broken {
            let err = composition_error(user, &err);
            match old {
                Some(old) => self.component.insert(name.to_string(), old),
                None => self.component.remove(name),
            };
            return Err(err);
        }
        Ok(())
    }

    /// Deletes the templates `names` names (comma-separated, wildcards); a
    /// name without a wildcard that names none is a 404, and a component
    /// template that an index template is made of stays.
    pub fn delete(&mut self, kind: Kind, names: &str) -> Result<()> {
        let mut chosen = Vec::new();
        for pattern in names.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let found = self.select(kind, Some(pattern)).map_err(|_| {
                let reason = format!("{} [{pattern}] missing", kind.key());
                match kind {
                    Kind::Index | Kind::Legacy => Error::NotFound {
                        es_type: "index_template_missing_exception",
                        reason,
                    },
                    Kind::Component => not_found(reason),
                }
            })?;
            chosen.extend(found);
        }
        if kind == Kind::Component {
            let users: Vec<&str> = self
                .index
                .iter()
                .filter(|(_, t)| t.composed_of.iter().any(|c| chosen.contains(c)))
                .map(|(n, _)| n.as_str())
                .collect();
            if !users.is_empty() {
                let mut used: Vec<&str> = chosen
                    .iter()
                    .filter(|c| self.index.values().any(|t| t.composed_of.contains(c)))
                    .map(String::as_str)
                    .collect();
                used.sort_unstable();
                used.dedup();
                return Err(Error::illegal_argument(format!(
                    "component templates [{}] cannot be removed as they are still in use by index templates [{}]",
                    used.join(", "),
                    users.join(", ")
                )));
            }
        }
        for name in chosen {
            match kind {
                Kind::Index => {
                    self.index.remove(&name);
                }
                Kind::Component => {
                    self.component.remove(&name);
                }
                Kind::Legacy => {
                    self.legacy.remove(&name);
                }
            }
        }
        Ok(())
    }

    /// Stores a legacy template, when it would create an index. With
    /// `create`, an existing template of the name is an error.
    pub fn put_legacy(&mut self, name: &str, template: LegacyTemplate, create: bool) -> Result<()> {
        self.check_put(Kind::Legacy, name, create)?;
        self.legacy.insert(name.to_string(), template);
        Ok(())
    }

    /// Fails unless `name` is a valid name for a template of `kind`, new
    /// when `create` asks for a new one.
    fn check_put(&self, kind: Kind, name: &str, create: bool) -> Result<()> {
        validate_name(kind, name)?;
        let exists = match kind {
            Kind::Index => self.index.contains_key(name),
            Kind::Component => self.component.contains_key(name),
            Kind::Legacy => self.legacy.contains_key(name),
        };
        if create && exists {
            // Elasticsearch names a legacy one by its key.
            let what = match kind {
                Kind::Legacy => kind.key(),
                _ => kind.words(),
            };
            return Err(Error::illegal_argument(format!("{what} [{name}] already exists")));
        }
        Ok(())
    }

    /// What an index template gives an index: its component templates in
    /// order, then its own template.
    fn compose(&self, template: &IndexTemplate) -> TemplateBody {
        let mut body = TemplateBody::default();
        for name in &template.composed_of {
            if let Some(component) = self.component.get(name) {
                body.overlay(&component.template);
            }
        }
        if let Some(own) = &template.template {
            body.overlay(own);
        }
        body
    }

    /// The index template that applies to an index created as `index`: the
    /// matching one of highest priority.
    pub fn matching(&self, index: &str) -> Option<(&str, &IndexTemplate)> {
        self.index
            .iter()
            .filter(|(_, t)| t.matches(index))
            .max_by(|(a, x), (b, y)| x.priority().cmp(&y.priority()).then(b.cmp(a)))
            .map(|(name, t)| (name.as_str(), t))
    }

    /// The create-index body of `index`: the matching template's
    /// composition with `body` (the request's) laid on top; `body` as it
    /// is when no template matches.
    pub fn create_body(&self, index: &str, body: Option<&Value>) -> Result<Option<Value>> {
        let mut composed = match self.matching(index) {
            Some((_, template)) => self.compose(template),
            None => {
                let mut legacy: Vec<(&String, &LegacyTemplate)> = self
                    .legacy
                    .iter()
                    .filter(|(_, t)| matches_any(&t.index_patterns, index))
                    .collect();
                if legacy.is_empty() {
                    return Ok(body.cloned());
                }
                legacy.sort_by_key(|(name, t)| (t.order, *name));
                let mut composed = TemplateBody::default();
                for (_, template) in legacy {
                    composed.overlay(&template.body);
                }
                composed
            }
        };
        composed.name_aliases_for(index);
        if let Some(body) = body {
            let obj = body
                .as_object()
                .ok_or_else(|| Error::illegal_argument("request body must be an object"))?;
            let mut request = Map::new();
            for (key, value) in obj {
                match key.as_str() {
                    "settings" | "mappings" | "aliases" => {
                        request.insert(key.clone(), value.clone());
                    }
                    other => {
                        return Err(Error::BadRequest {
                            es_type: "parse_exception",
                            reason: format!("unknown key [{other}] for create index"),
                        });
                    }
                }
            }
            composed.overlay(&TemplateBody::from_es(&Value::Object(request))?);
        }
        Ok(Some(composed.into_create_body()))
    }

    /// `POST /_index_template/_simulate_index/{index}`: the settings,
    /// mappings and aliases an index of this name would be created with,
    /// and the other templates whose patterns overlap the chosen one's.
    pub fn simulate(&self, index: &str) -> Value {
        match self.matching(index) {
            Some((chosen, template)) => self.simulated(chosen, template, Some(index)),
            None => json!({}),
        }
    }

    /// `POST /_index_template/_simulate[/{name}]`: what an index template
    /// gives an index, the stored one of `name` or the given one, checked
    /// as storing it would check it; and the other templates whose
    /// patterns overlap its patterns.
    pub fn simulate_template(&self, name: Option<&str>, given: Option<IndexTemplate>) -> Result<Value> {
        let (name, template) = match (name, given) {
            (name, Some(template)) => {
                // Checked under a name no stored template has.
                let name = match name {
                    Some(name) => name.to_string(),
                    None => (0..)
                        .map(|n| format!("{SIMULATED}-{n}"))
                        .find(|candidate| !self.index.contains_key(candidate))
                        .unwrap_or_else(|| SIMULATED.to_string()),
                };
                self.check_put(Kind::Index, &name, false)?;
                self.check_index(&name, &template)?;
                (name, template)
            }
            (Some(name), None) => match self.index.get(name) {
                Some(template) => (name.to_string(), template.clone()),
                None => {
                    return Err(Error::illegal_argument(format!(
                        "unable to simulate template [{name}] that does not exist"
                    )));
                }
            },
            (None, None) => {
                return Err(Error::illegal_argument(
                    "a template name to match or a new template body must be specified",
                ));
            }
        };
        Ok(self.simulated(&name, &template, None))
    }

    /// The simulation of `template`, stored (or checked) as `name`, for an
    /// index of the name `index` when one is given, with the other index
    /// templates and the legacy templates whose patterns overlap its own,
    /// in name order.
    fn simulated(&self, name: &str, template: &IndexTemplate, index: Option<&str>) -> Value {
        let mut overlapping: Vec<(&String, &Vec<String>)> = self
            .index
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .map(|(other, t)| (other, &t.index_patterns))
            .chain(self.legacy.iter().map(|(other, t)| (other, &t.index_patterns)))
            .filter(|(_, patterns)| any_overlap(patterns, &template.index_patterns))
            .collect();
        overlapping.sort();
        let overlapping: Vec<Value> = overlapping
            .into_iter()
            .map(|(name, patterns)| json!({"name": name, "index_patterns": patterns}))
            .collect();
        let mut body = self.compose(template);
        if let Some(index) = index {
            body.name_aliases_for(index);
        }
        body.aliases.get_or_insert_with(Map::new);
        body.mappings.get_or_insert_with(|| json!({}));
        body.settings.get_or_insert_with(Map::new);
        json!({"template": body.to_es(), "overlapping": overlapping})
    }
}

/// The name a template simulated without one is checked under (with a
/// number that no stored template's name has).
pub const SIMULATED: &str = "simulated-template";

/// Elasticsearch's rules for template names: lowercase, none of the
/// characters of a wildcard or a list, not starting with `_`.
fn validate_name(kind: Kind, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("name must not be empty".to_string())
    } else if name.chars().any(|c| c.is_uppercase()) {
        Some("name must be lower cased".to_string())
    } else if name.starts_with('_') {
        Some("name must not start with '_'".to_string())
    } else {
        name.chars()
            .find(|c| " ,\"\\/*?<>|#".contains(*c))
            .map(|c| format!("name must not contain [{c}]"))
    };
    match why {
        Some(why) => Err(Error::BadRequest {
            es_type: "invalid_index_template_exception",
            reason: format!("{} [{name}] invalid, cause [{why}]", kind.key()),
        }),
        None => Ok(()),
    }
}

fn composition_error(name: &str, err: &Error) -> Error {
    Error::illegal_argument(format!(
        "composable template [{name}] template after composition is invalid: {err}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_overlap_when_some_name_matches_both() {
        for (a, b, overlap) in [
            ("logs-*", "logs-*", true),
            ("logs-*", "*-prod", true),
            ("logs-*", "metrics-*", false),
            ("logs-2024", "logs-*", true),
            ("a*c", "ab*", true),
            ("a*c", "*b", false),
            ("x", "y", false),
            ("*", "anything", true),
        ] {
            assert_eq!(patterns_overlap(a, b), overlap, "{a} and {b}");
            assert_eq!(patterns_overlap(b, a), overlap, "{b} and {a}");
        }
    }

    #[test]
    fn composition_merges_objects_and_replaces_fields() {
        let mut base = json!({"dynamic": "strict", "properties": {
            "host": {"properties": {"name": {"type": "keyword"}, "ip": {"type": "ip"}}},
            "status": {"type": "keyword"}
        }});
        merge_mappings(
            &mut base,
            &json!({"dynamic": true, "properties": {
                "host": {"properties": {"ip": {"type": "keyword"}}},
                "status": {"type": "long"}
            }}),
        );
        assert_eq!(
            base,
            json!({"dynamic": true, "properties": {
                "host": {"properties": {"name": {"type": "keyword"}, "ip": {"type": "keyword"}}},
                "status": {"type": "long"}
            }})
        );
    }

    #[test]
    fn settings_are_flat_strings_and_nest_back() -> Result<()> {
        let flat = flat_settings(&json!({"index": {"number_of_shards": 2}, "refresh_interval": "5s"}))?;
        assert_eq!(
            Value::Object(flat.clone()),
            json!({"index.number_of_shards": "2", "index.refresh_interval": "5s"})
        );
        assert_eq!(
            nest(&flat),
            json!({"index": {"number_of_shards": "2", "refresh_interval": "5s"}})
        );
        Ok(())
    }
}
