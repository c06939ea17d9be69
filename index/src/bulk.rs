//! The `_bulk` API: NDJSON parsing, execution across indices, and
//! Elasticsearch's response shape.
//!
//! The action lines are checked before anything is written: an action line
//! that cannot be read rejects the request with a 400 and stores nothing.
//! A document source is read when its index writes it, as in
//! Elasticsearch, so a source line that is not JSON (or not an object)
//! fails its item alone, as do mapping conflicts, version conflicts, and
//! JSON that is well formed but cannot be read (a number out of range, a
//! lone surrogate escape, nesting deeper than 128); these are reported per
//! item beside the successful ones. An update's body is read here, since
//! the action needs it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::document::Key;
use crate::error::{Error, Result};
use crate::index::{Condition, DocWrite, Index, SeqNoCondition, VersionType, WriteResult};
use crate::indices::{Indices, RefreshPolicy};

/// The action of a bulk item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `index`.
    Index,
    /// `create`.
    Create,
    /// `update`.
    Update,
    /// `delete`.
    Delete,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Index => "index",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// One parsed bulk item.
#[derive(Debug, Clone)]
pub struct BulkItem {
    /// The action.
    pub action: Action,
    /// Target index.
    pub index: String,
    /// `require_alias`: the target must be an alias.
    pub require_alias: bool,
    /// The write.
    pub write: DocWrite,
}

/// The most bulk items room is made for before they are parsed.
const MAX_PREALLOCATED_ITEMS: usize = 65_536;

/// Parses a bulk NDJSON body. `default_index` comes from `/{index}/_bulk`,
/// and `require_alias` from `?require_alias=`, which action lines override.
pub fn parse_bulk(body: &str, default_index: Option<&str>, require_alias: bool) -> Result<Vec<BulkItem>> {
    // Most actions take two lines: room for them all at once (up to a
    // bound, whatever the body holds), not grown and copied as they come.
    let lines = body.bytes().filter(|&b| b == b'\n').count();
    let mut items = Vec::with_capacity((lines / 2 + 1).min(MAX_PREALLOCATED_ITEMS));
    let mut lines = body.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    while let Some((lineno, line)) = lines.next() {
        let lineno = lineno + 1;
        let ActionLine {
            action,
            index,
            id,
            condition,
            require_alias: line_requires_alias,
            retry_on_conflict,
        } = match plain_action(line) {
            Some((action, index, id)) => ActionLine {
                action,
                index: index.or_else(|| default_index.map(str::to_string)),
                id,
                condition: None,
                require_alias: None,
                retry_on_conflict: 0,
            },
            None => action_line(line, lineno, default_index)?,
        };
        // A delete writes no document, so it needs no alias to name its
        // index (as in Elasticsearch).
        let require_alias = action != Action::Delete && line_requires_alias.unwrap_or(require_alias);
        let index = index.ok_or_else(|| Error::BadRequest {
            es_type: "action_request_validation_exception",
            reason: "Validation Failed: 1: index is missing;".into(),
        })?;
        let mut source_line = || -> Result<(usize, &str)> {
            let (n, line) = lines
                .next()
                .ok_or_else(|| malformed(lineno, "the action is missing its source line"))?;
            Ok((n + 1, line))
        };
        let parse_error = |n: usize, e: serde_json::Error| Error::BadRequest {
            es_type: "x_content_parse_exception",
            reason: format!("[{n}] failed to parse source line: {e}"),
        };
        let write = match action {
            Action::Index | Action::Create => {
                // Parsed against the mapping when its index writes it.
                let (_, line) = source_line()?;
                let source = line.trim_matches(JSON_WHITESPACE);
                DocWrite::Index {
                    id,
                    source: Arc::from(source),
                    create: action == Action::Create,
                    condition,
                }
            }
            Action::Update => {
                let (n, line) = source_line()?;
                let body: Value = serde_json::from_str(line).map_err(|e| parse_error(n, e))?;
                let id = id.ok_or_else(|| Error::BadRequest {
                    es_type: "action_request_validation_exception",
                    reason: "Validation Failed: 1: id is missing;".into(),
                })?;
                let condition = condition.and_then(|c| c.seq_no());
                with_options(parse_update(id, &body)?, condition, retry_on_conflict)?
            }
            Action::Delete => {
                let id = id.ok_or_else(|| Error::BadRequest {
                    es_type: "action_request_validation_exception",
                    reason: "Validation Failed: 1: id is missing;".into(),
                })?;
                DocWrite::Delete { id, condition }
            }
        };
        items.push(BulkItem {
            action,
            index,
            require_alias,
            write,
        });
    }
    if items.is_empty() {
        return Err(Error::BadRequest {
            es_type: "action_request_validation_exception",
            reason: "Validation Failed: 1: no requests added;".into(),
        });
    }
    Ok(items)
}

/// An update write with its condition (an upsert takes none, as in
/// Elasticsearch: the document it would create has no last write) and its
/// `retry_on_conflict` (which a condition excludes: a compare-and-write
/// cannot be tried again).
pub fn with_options(
    mut write: DocWrite,
    condition: Option<SeqNoCondition>,
    retries: u32,
) -> Result<DocWrite> {
    if let DocWrite::Update {
        if_seq_no,
        upsert,
        doc_as_upsert,
        retry_on_conflict,
        ..
    } = &mut write
    {
        if condition.is_some() {
            let refused = if upsert.is_some() {
                Some("upsert requests don't support `if_seq_no` and `if_primary_term`")
            } else if *doc_as_upsert {
                Some("doc_as_upsert is not supported in combination with `if_seq_no` and `if_primary_term`")
            } else if retries > 0 {
                Some("compare and write operations can not be retried")
            } else {
                None
            };
            if let Some(why) = refused {
                return Err(Error::BadRequest {
                    es_type: "action_request_validation_exception",
                    reason: format!("Validation Failed: 1: {why};"),
                });
            }
        }
        *if_seq_no = condition;
        *retry_on_conflict = retries;
    }
    Ok(write)
}

/// Elasticsearch's error for `version` or `version_type` on an update
/// (which takes no versions), as its update API gives it.
pub fn update_versioning_refused() -> Error {
    Error::BadRequest {
        es_type: "action_request_validation_exception",
        reason: "Validation Failed: 1: internal versioning can not be used for optimistic concurrency \
                 control. Please use `if_seq_no` and `if_primary_term` instead;"
            .into(),
    }
}

/// What an action line says.
#[derive(Debug, PartialEq)]
struct ActionLine {
    action: Action,
    /// The target index, if any.
    index: Option<String>,
    id: Option<String>,
    /// `if_seq_no` and `if_primary_term`, or `version` and `version_type`.
    condition: Option<Condition>,
    /// `require_alias`, when the line says.
    require_alias: Option<bool>,
    /// `retry_on_conflict` (updates only).
    retry_on_conflict: u32,
}

/// An action line of any shape, with Elasticsearch's error for each way it
/// can be wrong: the action, its target index (if any), its id and its
/// condition (`if_seq_no`, `if_primary_term`).
fn action_line(line: &str, lineno: usize, default_index: Option<&str>) -> Result<ActionLine> {
    let action_line: Value = serde_json::from_str(line).map_err(|e| malformed(lineno, &e.to_string()))?;
    let obj = action_line
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| malformed(lineno, "expected an object with a single action"))?;
    let (name, meta) = obj
        .iter()
        .next()
        .ok_or_else(|| malformed(lineno, "empty action"))?;
    let action = match name.as_str() {
        "index" => Action::Index,
        "create" => Action::Create,
        "update" => Action::Update,
        "delete" => Action::Delete,
        other => {
            return Err(Error::illegal_argument(format!(
                "Malformed action/metadata line [{lineno}], expected one of [create, delete, index, update] but found [{other}]"
            )));
        }
    };
    let meta = meta
        .as_object()
        .ok_or_else(|| malformed(lineno, "action metadata must be an object"))?;
    let mut index = default_index.map(str::to_string);
    let mut id = None;
    let (mut seq_no, mut primary_term) = (None, None);
    let (mut version, mut version_type) = (None, None);
    let mut require_alias = None;
    let mut retry_on_conflict = 0;
    let number = |v: &Value, key: &str| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| malformed(lineno, &format!("[{key}] must be a number")))
    };
    for (k, v) in meta {
        match k.as_str() {
            "_index" => index = Some(as_string(v, lineno, "_index")?),
            "_id" => id = Some(as_string(v, lineno, "_id")?),
            "if_seq_no" => seq_no = Some(number(v, k)?),
            "if_primary_term" => primary_term = Some(number(v, k)?),
            "version" => version = Some(number(v, k)?),
            "version_type" => {
                version_type = Some(
                    v.as_str()
                        .ok_or_else(|| malformed(lineno, "[version_type] must be a string"))?,
                );
            }
            "require_alias" => {
                require_alias = Some(
                    v.as_bool()
                        .ok_or_else(|| malformed(lineno, "[require_alias] must be a boolean"))?,
                );
            }
            "retry_on_conflict" => {
                retry_on_conflict = u32::try_from(number(v, k)?)
                    .map_err(|_| malformed(lineno, "[retry_on_conflict] must be a non-negative number"))?;
            }
            "routing" | "_routing" | "pipeline" | "op_type" | "dynamic_templates" => {}
            other => {
                return Err(Error::illegal_argument(format!(
                    "Action/metadata line [{lineno}] contains an unknown parameter [{other}]"
                )));
            }
        }
    }
    let condition = match action {
        Action::Update => {
            let internal = version_type.map_or(Ok(VersionType::Internal), VersionType::parse)?;
            if version.is_some() || internal != VersionType::Internal {
                return Err(Error::illegal_argument(
                    "Update requests do not support versioning. Please use `if_seq_no` and `if_primary_term` instead",
                ));
            }
            SeqNoCondition::from_params(seq_no, primary_term)?.map(Condition::SeqNo)
        }
        Action::Index | Action::Create | Action::Delete => Condition::of_request(
            action == Action::Create,
            version,
            version_type,
            seq_no,
            primary_term,
        )?,
    };
    Ok(ActionLine {
        action,
        index,
        id,
        condition,
        require_alias,
        retry_on_conflict,
    })
}

/// The common shape of an action line, read without a JSON tree: an
/// object with one action, whose metadata is an object holding at most
/// `_index` and `_id`, as strings. Anything else goes through
/// [`action_line`].
struct PlainAction {
    action: Action,
    index: Option<String>,
    id: Option<String>,
}

impl<'de> Deserialize<'de> for PlainAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(PlainActionVisitor)
    }
}

struct PlainActionVisitor;

impl<'de> Visitor<'de> for PlainActionVisitor {
    type Value = PlainAction;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with one action")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<PlainAction, A::Error> {
        let Some(Key(name)) = map.next_key::<Key<'de>>()? else {
            return Err(de::Error::custom("no action"));
        };
        let action = match name.as_ref() {
            "index" => Action::Index,
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            _ => return Err(de::Error::custom("not an action")),
        };
        let PlainMeta { index, id } = map.next_value()?;
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("more than one action"));
        }
        Ok(PlainAction { action, index, id })
    }
}

/// Plain action metadata: an object with at most `_index` and `_id`, each a
/// string and there once.
struct PlainMeta {
    index: Option<String>,
    id: Option<String>,
}

impl<'de> Deserialize<'de> for PlainMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(PlainMetaVisitor)
    }
}

struct PlainMetaVisitor;

impl<'de> Visitor<'de> for PlainMetaVisitor {
    type Value = PlainMeta;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("action metadata")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<PlainMeta, A::Error> {
        let mut meta = PlainMeta {
            index: None,
            id: None,
        };
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let slot = match key.as_ref() {
                "_index" => &mut meta.index,
                "_id" => &mut meta.id,
                _ => return Err(de::Error::custom("other metadata")),
            };
            if slot.is_some() {
                return Err(de::Error::custom("repeated metadata"));
            }
            let Key(value) = map.next_value()?;
            *slot = Some(value.into_owned());
        }
        Ok(meta)
    }
}

/// The action, index and id of a plain action line; `None` for any other line.
fn plain_action(line: &str) -> Option<(Action, Option<String>, Option<String>)> {
    let plain: PlainAction = serde_json::from_str(line).ok()?;
    Some((plain.action, plain.index, plain.id))
}

/// Parses the body of an `update` (`{"doc": ..., "doc_as_upsert": ..., "upsert": ...}`).
pub fn parse_update(id: String, body: &Value) -> Result<DocWrite> {
    let obj = body
        .as_object()
        .ok_or_else(|| Error::illegal_argument("update body must be an object"))?;
    let mut doc = None;
    let mut doc_as_upsert = false;
    let mut upsert = None;
    let mut detect_noop = true;
    for (k, v) in obj {
        match k.as_str() {
            "doc" if v.is_object() => doc = Some(v.clone()),
            "doc_as_upsert" => doc_as_upsert = v.as_bool().unwrap_or(false),
            "upsert" if v.is_object() => upsert = Some(v.clone()),
            "detect_noop" => {
                detect_noop = v
                    .as_bool()
                    .ok_or_else(|| Error::illegal_argument("[detect_noop] must be a boolean"))?;
            }
            "_source" => {}
            "script" => return Err(Error::illegal_argument("scripted updates are not supported")),
            other => {
                return Err(Error::illegal_argument(format!(
                    "[UpdateRequest] unknown field [{other}]"
                )));
            }
        }
    }
    if doc.is_none() && upsert.is_none() {
        return Err(Error::BadRequest {
            es_type: "action_request_validation_exception",
            reason: "Validation Failed: 1: script or doc is missing;".into(),
        });
    }
    Ok(DocWrite::Update {
        if_seq_no: None,
        retry_on_conflict: 0,
        detect_noop,
        id,
        doc,
        doc_as_upsert,
        upsert,
    })
}

fn as_string(v: &Value, lineno: usize, key: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(malformed(lineno, &format!("[{key}] must be a string"))),
    }
}

/// The characters JSON allows around a value.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\r', '\n'];

fn malformed(lineno: usize, detail: &str) -> Error {
    Error::illegal_argument(format!("Malformed action/metadata line [{lineno}]: {detail}"))
}

/// A executed bulk: the response and what to refresh.
#[derive(Debug)]
pub struct BulkOutcome {
    /// Elasticsearch's bulk response.
    pub response: BulkResponse,
    /// Touched indices with the highest sequence number written per shard.
    pub touched: Vec<(Arc<Index>, HashMap<u32, u64>)>,
}

/// The writes of one index with their positions in the request.
type IndexWrites = Vec<(usize, Action, DocWrite)>;

/// Elasticsearch's error for a write with `require_alias` to a name that
/// is not an alias.
pub fn not_an_alias(name: &str) -> Error {
    Error::NotFound {
        es_type: "index_not_found_exception",
        reason: format!("[require_alias] request flag is [true] and [{name}] is not an alias"),
    }
}

/// Executes parsed bulk items. Blocking: run it on a blocking thread.
pub fn execute_bulk(indices: &Indices, items: Vec<BulkItem>, refresh: RefreshPolicy) -> Result<BulkOutcome> {
    let started = Instant::now();
    let n = items.len();
    let mut slots: Vec<Option<ItemResponse>> = (0..n).map(|_| None).collect();
    let mut by_index: Vec<(String, IndexWrites)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        if item.require_alias && !indices.is_alias(&item.index) {
            let err = not_an_alias(&item.index);
            slots[i] = Some(ItemResponse::failed(
                item.action,
                &Arc::from(item.index.as_str()),
                write_id(&item.write),
                &err,
            ));
            continue;
        }
        match by_index.iter_mut().find(|(name, _)| *name == item.index) {
            Some((_, v)) => v.push((i, item.action, item.write)),
            None => {
                // Most bulks write one index: room for every remaining item.
                let mut writes = Vec::with_capacity(n - i);
                writes.push((i, item.action, item.write));
                by_index.push((item.index, writes));
            }
        }
    }
    let mut touched = Vec::new();
    for (name, writes) in by_index {
        let name: Arc<str> = Arc::from(name);
        let only_deletes = writes.iter().all(|(_, a, _)| *a == Action::Delete);
        let index = if only_deletes {
            indices.write_index(&name)
        } else {
            indices.get_or_create(&name)
        };
        let (index, name) = match index {
            // Items name the index written, not the alias they wrote through.
            Ok(index) if *index.name() != *name => {
                let concrete = Arc::from(index.name());
                (index, concrete)
            }
            Ok(index) => (index, name),
            Err(err) => {
                for (i, action, write) in writes {
                    slots[i] = Some(ItemResponse::failed(action, &name, write_id(&write), &err));
                }
                continue;
            }
        };
        let (positions, rest): (Vec<usize>, Vec<(Action, DocWrite)>) =
            writes.into_iter().map(|(i, a, w)| (i, (a, w))).unzip();
        let (actions, writes): (Vec<Action>, Vec<DocWrite>) = rest.into_iter().unzip();
        let batch = match index.write(writes, refresh) {
            Ok(batch) => batch,
            Err(err) => {
                for (pos, action) in positions.into_iter().zip(actions) {
                    slots[pos] = Some(ItemResponse::failed(action, &name, None, &err));
                }
                continue;
            }
        };
        for ((pos, action), (id, result)) in positions.into_iter().zip(actions).zip(batch.items) {
            slots[pos] = Some(match result {
                Ok(ok) => ItemResponse::done(action, &name, ok),
                Err(err) => ItemResponse::failed(action, &name, id, &err),
            });
        }
        touched.push((index, batch.touched));
    }
    let items: Vec<ItemResponse> = slots
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                ItemResponse::failed(
                    Action::Index,
                    &Arc::from(""),
                    None,
                    &Error::Internal("bulk item lost its result".into()),
                )
            })
        })
        .collect();
    let response = BulkResponse {
        took: started.elapsed().as_millis() as u64,
        errors: items.iter().any(|i| i.outcome.is_err()),
        items,
    };
    Ok(BulkOutcome { response, touched })
}

/// Elasticsearch's bulk response, serialized as it is (no JSON tree in between).
#[derive(Debug, Serialize)]
pub struct BulkResponse {
    /// Milliseconds the bulk took.
    pub took: u64,
    /// Whether some item failed.
    pub errors: bool,
    /// Per-item results, in request order.
    pub items: Vec<ItemResponse>,
}

impl BulkResponse {
    /// The response as JSON with only the parts `filter` keeps of it
    /// (Elasticsearch's `filter_path`; `filter` takes a whole response and
    /// answers what it keeps, `{}` for nothing). Successful items of one
    /// action have the same fields, so the filter runs on the first of them
    /// and the others are written straight from their results with the
    /// fields it kept; a failed item is filtered on its own.
    pub fn to_filtered_json(&self, filter: &dyn Fn(&Value) -> Value) -> serde_json::Result<Vec<u8>> {
        let head = match filter(&serde_json::json!({"took": self.took, "errors": self.errors})) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let mut masks: HashMap<&'static str, Option<Map<String, Value>>> = HashMap::new();
        for item in self.items.iter().filter(|i| i.outcome.is_ok()) {
            let action = item.action.name();
            if let Entry::Vacant(mask) = masks.entry(action) {
                mask.insert(filtered_item(item, action, filter)?);
            }
        }
        let mut items = Vec::new();
        for item in &self.items {
            let action = item.action.name();
            match &item.outcome {
                Ok(result) => {
                    if let Some(Some(mask)) = masks.get(action) {
                        items.push(Kept::Masked(action, item.ok_body(result), mask));
                    }
                }
                Err(_) => {
                    if let Some(body) = filtered_item(item, action, filter)? {
                        items.push(Kept::Failed(action, body));
                    }
                }
            }
        }
        serde_json::to_vec(&Filtered { head, items })
    }
}

/// What `filter` keeps of `item`'s body, seen as the one item of a response.
fn filtered_item(
    item: &ItemResponse,
    action: &str,
    filter: &dyn Fn(&Value) -> Value,
) -> serde_json::Result<Option<Map<String, Value>>> {
    let response = serde_json::json!({"items": [serde_json::to_value(item)?]});
    let mut kept = filter(&response);
    Ok(
        match kept.pointer_mut(&format!("/items/0/{action}")).map(Value::take) {
            Some(Value::Object(body)) => Some(body),
            _ => None,
        },
    )
}

/// A filtered bulk response: the kept top-level fields, and the kept items
/// (none: no `items`).
struct Filtered<'a> {
    head: Map<String, Value>,
    items: Vec<Kept<'a>>,
}

impl Serialize for Filtered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (key, value) in &self.head {
            m.serialize_entry(key, value)?;
        }
        if !self.items.is_empty() {
            m.serialize_entry("items", &self.items)?;
        }
        m.end()
    }
}

/// A kept item: a successful one with the fields of its body that the mask
/// (the filtered body of the first item of its action) holds, or what the
/// filter kept of a failed one.
enum Kept<'a> {
    Masked(&'static str, WriteBody<'a>, &'a Map<String, Value>),
    Failed(&'static str, Map<String, Value>),
}

impl Serialize for Kept<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut outer = s.serialize_map(Some(1))?;
        match self {
            Kept::Masked(action, body, mask) => outer.serialize_entry(action, &MaskedBody(body, mask))?,
            Kept::Failed(action, body) => outer.serialize_entry(action, body)?,
        }
        outer.end()
    }
}

struct MaskedBody<'a>(&'a WriteBody<'a>, &'a Map<String, Value>);

impl Serialize for MaskedBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (b, mask) = (self.0, self.1);
        let mut m = s.serialize_map(None)?;
        if mask.contains_key("_index") {
            m.serialize_entry("_index", b._index)?;
        }
        if mask.contains_key("_id") {
            m.serialize_entry("_id", b._id)?;
        }
        if mask.contains_key("_version") {
            m.serialize_entry("_version", &b._version)?;
        }
        if mask.contains_key("result") {
            m.serialize_entry("result", b.result)?;
        }
        if let Some(Value::Object(shards)) = mask.get("_shards") {
            let mut kept = Map::new();
            for (key, n) in [
                ("total", b._shards.total),
                ("successful", b._shards.successful),
                ("failed", b._shards.failed),
            ] {
                if shards.contains_key(key) {
                    kept.insert(key.into(), n.into());
                }
            }
            m.serialize_entry("_shards", &kept)?;
        }
        if mask.contains_key("_seq_no") {
            m.serialize_entry("_seq_no", &b._seq_no)?;
        }
        if mask.contains_key("_primary_term") {
            m.serialize_entry("_primary_term", &b._primary_term)?;
        }
        if let Some(status) = b.status.filter(|_| mask.contains_key("status")) {
            m.serialize_entry("status", &status)?;
        }
        m.end()
    }
}

/// One item of a bulk response: `{"<action>": {...}}`.
#[derive(Debug)]
pub struct ItemResponse {
    action: Action,
    index: Arc<str>,
    /// The write's result, or the document id (when known) with the
    /// status, type and reason of its failure.
    outcome: std::result::Result<WriteResult, ItemError>,
}

#[derive(Debug)]
struct ItemError {
    id: Option<String>,
    status: u16,
    es_type: &'static str,
    reason: String,
}

impl ItemResponse {
    /// The body of this successful item, with its result `r`.
    fn ok_body<'a>(&'a self, r: &'a WriteResult) -> WriteBody<'a> {
        WriteBody {
            status: Some(result_status(r)),
            ..WriteBody::new(&self.index, r)
        }
    }

    fn done(action: Action, index: &Arc<str>, result: WriteResult) -> ItemResponse {
        ItemResponse {
            action,
            index: Arc::clone(index),
            outcome: Ok(result),
        }
    }

    fn failed(action: Action, index: &Arc<str>, id: Option<String>, err: &Error) -> ItemResponse {
        ItemResponse {
            action,
            index: Arc::clone(index),
            outcome: Err(ItemError {
                id,
                status: err.status(),
                es_type: err.es_type(),
                reason: err.to_string(),
            }),
        }
    }
}

impl Serialize for ItemResponse {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut outer = s.serialize_map(Some(1))?;
        let action = self.action.name();
        match &self.outcome {
            Ok(r) => outer.serialize_entry(action, &self.ok_body(r))?,
            Err(e) => outer.serialize_entry(
                action,
                &FailedBody {
                    _index: &self.index,
                    _id: &e.id,
                    status: e.status,
                    error: ErrorBody {
                        es_type: e.es_type,
                        reason: &e.reason,
                        index: &self.index,
                    },
                },
            )?,
        }
        outer.end()
    }
}

fn write_id(write: &DocWrite) -> Option<String> {
    match write {
        DocWrite::Index { id, .. } => id.clone(),
        DocWrite::Update { id, .. } | DocWrite::Delete { id, .. } => Some(id.clone()),
    }
}

/// The status code of a successful write result.
pub fn result_status(result: &WriteResult) -> u16 {
    match result.result {
        "created" => 201,
        "not_found" => 404,
        _ => 200,
    }
}

/// A successful write as Elasticsearch reports it: the single-document
/// API's body (with `forced_refresh` when the write asked for a refresh)
/// and, with `status`, a bulk item's.
#[derive(Debug, Serialize)]
pub struct WriteBody<'a> {
    _index: &'a str,
    _id: &'a str,
    _version: u64,
    result: &'a str,
    _shards: ShardsOk,
    _seq_no: u64,
    _primary_term: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forced_refresh: Option<bool>,
}

impl<'a> WriteBody<'a> {
    /// The body of write `r` to `index` (a noop reached no shard).
    pub fn new(index: &'a str, r: &'a WriteResult) -> WriteBody<'a> {
        let reached = u32::from(r.result != "noop");
        WriteBody {
            _index: index,
            _id: &r.id,
            _version: r.version,
            result: r.result,
            _shards: ShardsOk {
                total: reached,
                successful: reached,
                failed: 0,
            },
            _seq_no: r.seq_no,
            _primary_term: crate::index::PRIMARY_TERM,
            status: None,
            forced_refresh: None,
        }
    }

    /// With `forced_refresh`: whether the write refreshed the index itself
    /// (`refresh=true`) rather than waiting for a refresh (`wait_for`).
    pub fn forced_refresh(mut self, forced: bool) -> WriteBody<'a> {
        self.forced_refresh = Some(forced);
        self
    }
}

/// `_shards` of a write acknowledged by its primary.
#[derive(Debug, Serialize)]
struct ShardsOk {
    total: u32,
    successful: u32,
    failed: u32,
}

/// A failed bulk item.
#[derive(Serialize)]
struct FailedBody<'a> {
    _index: &'a str,
    _id: &'a Option<String>,
    status: u16,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    es_type: &'a str,
    reason: &'a str,
    index: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_keeps_everything_writes_the_whole_response() -> serde_json::Result<()> {
        let index: Arc<str> = Arc::from("a");
        let done = |id: &str, result| WriteResult {
            id: id.into(),
            shard: 0,
            version: 2,
            seq_no: 7,
            result,
        };
        let response = BulkResponse {
            took: 3,
            errors: true,
            items: vec![
                ItemResponse::done(Action::Index, &index, done("1", "created")),
                ItemResponse::failed(
                    Action::Create,
                    &index,
                    Some("2".into()),
                    &Error::illegal_argument("no"),
                ),
                ItemResponse::done(Action::Index, &index, done("3", "updated")),
                ItemResponse::done(Action::Delete, &index, done("4", "not_found")),
            ],
        };
        let whole = serde_json::to_vec(&response)?;
        assert_eq!(response.to_filtered_json(&|v| v.clone())?, whole);
        Ok(())
    }

    #[test]
    fn parses_all_actions() -> Result<()> {
        let body = r#"{"index":{"_index":"a","_id":"1"}}
{"x":1}
{"create":{"_id":"2"}}
{"x":2}
{"update":{"_id":"1"}}
{"doc":{"y":3}}
{"delete":{"_id":"2"}}
"#;
        let items = parse_bulk(body, Some("b"), false)?;
        let actions: Vec<Action> = items.iter().map(|i| i.action).collect();
        assert_eq!(
            actions,
            vec![Action::Index, Action::Create, Action::Update, Action::Delete]
        );
        assert_eq!(items[0].index, "a");
        assert_eq!(items[1].index, "b");
        Ok(())
    }

    #[test]
    fn plain_action_lines_read_as_the_general_reader_reads_them() -> Result<()> {
        for line in [
            r#"{"index":{}}"#,
            r#"{"create":{"_index":"a","_id":"x\"y"}}"#,
            r#"{"delete":{"_id":"7"}}"#,
            r#"{"update":{"_index":"b"}}"#,
        ] {
            let ActionLine {
                action,
                index,
                id,
                condition,
                require_alias,
                retry_on_conflict,
            } = action_line(line, 1, None)?;
            assert_eq!((condition, require_alias, retry_on_conflict), (None, None, 0));
            assert_eq!(plain_action(line), Some((action, index, id)));
        }
        // Other shapes go the general way.
        assert_eq!(plain_action(r#"{"index":{"_id":7}}"#), None);
        assert_eq!(
            action_line(r#"{"index":{"_id":7}}"#, 1, None)?.id.as_deref(),
            Some("7")
        );
        assert_eq!(plain_action(r#"{"index":{"_id":null}}"#), None);
        assert!(action_line(r#"{"index":{"_id":null}}"#, 1, None).is_err());
        assert_eq!(plain_action(r#"{"index":{},"delete":{}}"#), None);
        assert_eq!(plain_action(r#"{"index":{"routing":"r"}}"#), None);
        // Shapes that are not action lines at all are left to the general
        // reader, which rejects them.
        for line in [
            r#"[{"_id":"1"}]"#,
            r#"{"index":["a","1"]}"#,
            r#"{"index":[]}"#,
            r#"{"index":null,"delete":{"_id":"1"}}"#,
        ] {
            assert_eq!(plain_action(line), None, "{line}");
            assert!(action_line(line, 1, None).is_err(), "{line}");
        }
        assert_eq!(plain_action(r#"{"index":{"_id":"1","_id":"2"}}"#), None);
        Ok(())
    }

    #[test]
    fn malformed_action_lines_reject_the_request() -> Result<()> {
        let err = parse_bulk("{\"index\":{}\n{\"a\":1}\n", Some("a"), false).err();
        assert!(
            err.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("Malformed action/metadata line [1]")
        );
        let err = parse_bulk("{\"update\":{\"_id\":\"1\"}}\n{\"doc\":\n", Some("a"), false).err();
        assert_eq!(
            err.as_ref().map(Error::es_type),
            Some("x_content_parse_exception")
        );
        // A document source is read when it is written, and fails its item
        // alone: here it is taken as it stands, trimmed of JSON's whitespace.
        for (body, source) in [
            ("{\"index\":{}}\n {\"a\":1}\u{c}\n", "{\"a\":1}\u{c}"),
            ("{\"index\":{}}\n{not json\t\n", "{not json"),
            ("{\"create\":{}}\n[1, 2]\n", "[1, 2]"),
        ] {
            let items = parse_bulk(body, Some("a"), false)?;
            assert!(
                matches!(&items[..], [BulkItem { write: DocWrite::Index { source: s, .. }, .. }] if &**s == source),
                "{items:?}"
            );
        }
        let err = parse_bulk("{\"frobnicate\":{}}\n", Some("a"), false).err();
        assert!(
            err.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("frobnicate")
        );
        let err = parse_bulk("{\"index\":{}}\n{}\n", None, false).err();
        assert_eq!(
            err.map(|e| e.es_type()),
            Some("action_request_validation_exception")
        );
        Ok(())
    }
}
