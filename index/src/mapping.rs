//! Elasticsearch-style mappings: field types, parsing of `mappings` JSON,
//! rendering back to Elasticsearch's nested shape, and dynamic mapping.
//!
//! Internally a mapping is flat: one entry per dotted path (`user.name`), with
//! multi-fields (`title.keyword`) kept under their parent.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::date::DateFormat;
use crate::document::Scalar;
use crate::error::{Error, Result};

/// The type of a mapped field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Exact string, aggregatable (fast field).
    Keyword,
    /// Analyzed full-text string.
    Text,
    /// 64-bit signed integer.
    Long,
    /// 32-bit signed integer.
    Integer,
    /// 16-bit signed integer.
    Short,
    /// 8-bit signed integer.
    Byte,
    /// 64-bit float.
    Double,
    /// 32-bit float.
    Float,
    /// A decimal number stored as a whole number of `1 / scaling_factor`
    /// units (a 64-bit integer), so that sums of it are exact.
    ScaledFloat,
    /// Date, stored as epoch milliseconds.
    Date,
    /// Boolean.
    Boolean,
    /// IPv4 or IPv6 address.
    Ip,
}

impl FieldType {
    /// Parses an Elasticsearch type name.
    pub fn parse(name: &str) -> Option<FieldType> {
        Some(match name {
            "keyword" => FieldType::Keyword,
            "text" => FieldType::Text,
            "long" => FieldType::Long,
            "integer" => FieldType::Integer,
            "short" => FieldType::Short,
            "byte" => FieldType::Byte,
            "double" => FieldType::Double,
            "float" => FieldType::Float,
            "scaled_float" => FieldType::ScaledFloat,
            "date" => FieldType::Date,
            "boolean" => FieldType::Boolean,
            "ip" => FieldType::Ip,
            _ => return None,
        })
    }

    /// The Elasticsearch type name.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Keyword => "keyword",
            FieldType::Text => "text",
            FieldType::Long => "long",
            FieldType::Integer => "integer",
            FieldType::Short => "short",
            FieldType::Byte => "byte",
            FieldType::Double => "double",
            FieldType::Float => "float",
            FieldType::ScaledFloat => "scaled_float",
            FieldType::Date => "date",
            FieldType::Boolean => "boolean",
            FieldType::Ip => "ip",
        }
    }

    /// Integer types and their inclusive value range.
    pub fn integer_range(self) -> Option<(i64, i64)> {
        match self {
            FieldType::Long => Some((i64::MIN, i64::MAX)),
            FieldType::Integer => Some((i32::MIN as i64, i32::MAX as i64)),
            FieldType::Short => Some((i16::MIN as i64, i16::MAX as i64)),
            FieldType::Byte => Some((i8::MIN as i64, i8::MAX as i64)),
            _ => None,
        }
    }
}

/// A query value for an integer field, as Elasticsearch 8.15 reads one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IntegerValue {
    /// An integer, taken exactly (a long beyond 2^53 has no f64 of its own).
    Exact(i64),
    /// A number with a fractional part: a term with one matches nothing,
    /// and a range bound with one rounds inwards, if [`in_query_range`].
    Fraction(f64),
    /// An integer beyond the range Elasticsearch checks ("Value [...] is
    /// out of range for an integer"): `byte` and `short` fields are queried
    /// as integers, so a value beyond their own range matches nothing
    /// (8.16 makes an out-of-range term match nothing too).
    OutOfRange,
    /// Not a number.
    NotANumber,
}

/// Reads `text` as a query value for a field of the integer type `ty`.
pub fn integer_value(ty: FieldType, text: &str) -> IntegerValue {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // An integer literal beyond i64 is out of range too (its nearest
        // f64 may be i64::MIN).
        return match text.parse::<i64>() {
            Ok(n) if ty == FieldType::Long || i32::try_from(n).is_ok() => IntegerValue::Exact(n),
            _ => IntegerValue::OutOfRange,
        };
    }
    let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) else {
        return IntegerValue::NotANumber;
    };
    match (f.fract() != 0.0, in_query_range(ty, f)) {
        (true, _) => IntegerValue::Fraction(f),
        (false, true) => IntegerValue::Exact(f as i64),
        (false, false) => IntegerValue::OutOfRange,
    }
}

/// Whether `f` is within the range Elasticsearch checks a query value for
/// a field of the integer type `ty` against (a long's, else an integer's).
pub fn in_query_range(ty: FieldType, f: f64) -> bool {
    match ty {
        // 2^63 itself is beyond a long, but the nearest f64 to i64::MAX.
        FieldType::Long => f >= i64::MIN as f64 && f < i64::MAX as f64,
        _ => f >= i32::MIN as f64 && f <= i32::MAX as f64,
    }
}

/// One mapped field.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FieldMapping {
    /// The field type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Date format (`date` only), Elasticsearch syntax such as
    /// `strict_date_optional_time||epoch_millis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Units per 1 (`scaled_float` only): a power of ten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_factor: Option<f64>,
    /// Strings longer than this are not indexed (`keyword` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_above: Option<u32>,
    /// Multi-fields, e.g. `keyword` under a `text` field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldMapping>,
    /// Whether an array has been indexed into this field (it is then a list column).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multi_valued: bool,
}

impl FieldMapping {
    /// A plain field of the given type.
    pub fn new(ty: FieldType) -> Self {
        FieldMapping {
            ty,
            format: None,
            scaling_factor: None,
            ignore_above: None,
            fields: BTreeMap::new(),
            multi_valued: false,
        }
    }

    /// The parsed date format of a `date` field.
    pub fn date_format(&self) -> Result<DateFormat> {
        DateFormat::parse(self.format.as_deref().unwrap_or(DateFormat::DEFAULT))
    }

    /// The decimal digits of a `scaled_float` field: `log10(scaling_factor)`.
    pub fn decimal_scale(&self) -> Option<i8> {
        self.scaling_factor.and_then(decimal_digits)
    }

    fn parse(path: &str, def: &Value) -> Result<FieldMapping> {
        let obj = def
            .as_object()
            .ok_or_else(|| Error::mapper_parsing(format!("expected an object for field [{path}]")))?;
        let ty_name = obj.get("type").and_then(Value::as_str).unwrap_or("object");
        let ty = FieldType::parse(ty_name).ok_or_else(|| {
            Error::mapper_parsing(format!(
                "no handler for type [{ty_name}] declared on field [{path}]"
            ))
        })?;
        let mut mapping = FieldMapping::new(ty);
        for (key, value) in obj {
            match key.as_str() {
                "type" => {}
                "format" if ty == FieldType::Date => {
                    let format = value.as_str().ok_or_else(|| {
                        Error::mapper_parsing(format!("[format] of field [{path}] must be a string"))
                    })?;
                    DateFormat::parse(format)?;
                    mapping.format = Some(format.to_string());
                }
                "scaling_factor" if ty == FieldType::ScaledFloat => {
                    let factor = value.as_f64().filter(|f| decimal_digits(*f).is_some()).ok_or_else(|| {
                        Error::mapper_parsing(format!(
                            "[scaling_factor] of field [{path}] must be a power of ten from 1 to 1e18, got [{value}]"
                        ))
                    })?;
                    mapping.scaling_factor = Some(factor);
                }
                "ignore_above" if ty == FieldType::Keyword => {
                    let n = value
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            Error::mapper_parsing(format!(
                                "[ignore_above] of field [{path}] must be a positive integer"
                            ))
                        })?;
                    mapping.ignore_above = Some(n);
                }
                "fields" => {
                    let subs = value.as_object().ok_or_else(|| {
                        Error::mapper_parsing(format!("[fields] of field [{path}] must be an object"))
                    })?;
                    for (name, sub) in subs {
                        let sub_path = format!("{path}.{name}");
                        let sub = FieldMapping::parse(&sub_path, sub)?;
                        if !sub.fields.is_empty() {
                            return Err(Error::mapper_parsing(format!(
                                "multi-field [{sub_path}] cannot have multi-fields of its own"
                            )));
                        }
                        mapping.fields.insert(name.clone(), sub);
                    }
                }
                // Accepted for compatibility, with no effect on storage.
                "index" | "doc_values" | "store" | "norms" | "analyzer" | "search_analyzer" | "coerce"
                | "boost" => {}
                other => {
                    return Err(Error::mapper_parsing(format!(
                        "unknown parameter [{other}] on mapper [{path}] of type [{ty_name}]"
                    )));
                }
            }
        }
        if ty == FieldType::ScaledFloat && mapping.scaling_factor.is_none() {
            return Err(Error::mapper_parsing(format!(
                "Field [scaling_factor] is required for field [{path}] of type [scaled_float]"
            )));
        }
        Ok(mapping)
    }

    /// The field as Elasticsearch shows it in a mapping.
    pub fn render(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("type".into(), json!(self.ty.name()));
        if let Some(format) = &self.format {
            obj.insert("format".into(), json!(format));
        }
        if let Some(f) = self.scaling_factor {
            obj.insert("scaling_factor".into(), json!(f));
        }
        if let Some(n) = self.ignore_above {
            obj.insert("ignore_above".into(), json!(n));
        }
        if !self.fields.is_empty() {
            let subs: Map<String, Value> = self
                .fields
                .iter()
                .map(|(name, sub)| (name.clone(), sub.render()))
                .collect();
            obj.insert("fields".into(), Value::Object(subs));
        }
        Value::Object(obj)
    }
}

/// `k` for a scaling factor of `10^k` (`0 <= k <= 18`).
fn decimal_digits(factor: f64) -> Option<i8> {
    (0..=18i8).find(|k| 10f64.powi(i32::from(*k)) == factor)
}

/// What to do with fields that are not in the mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dynamic {
    /// Map them from the first value seen (Elasticsearch's default).
    #[default]
    True,
    /// Keep them in `_source` only.
    False,
    /// Reject documents that have them.
    Strict,
}

/// A column of the index as SQL sees it: a mapped path and its mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Dotted path, e.g. `title.keyword`.
    pub path: String,
    /// Its mapping.
    pub mapping: FieldMapping,
    /// For a multi-field, the path of the parent field whose values it indexes.
    pub source_path: String,
}

/// An index mapping.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mapping {
    /// Leaf fields by dotted path.
    pub fields: BTreeMap<String, FieldMapping>,
    /// Dynamic mapping policy.
    #[serde(default)]
    pub dynamic: Dynamic,
}

impl Mapping {
    /// Parses Elasticsearch's `mappings` object (`{"properties": {...}, "dynamic": ...}`).
    pub fn from_es(value: &Value) -> Result<Mapping> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::mapper_parsing("[mappings] must be an object"))?;
        let mut mapping = Mapping::default();
        for (key, value) in obj {
            match key.as_str() {
                "properties" => parse_properties("", value, &mut mapping.fields)?,
                "dynamic" => {
                    mapping.dynamic = match value {
                        Value::Bool(true) => Dynamic::True,
                        Value::Bool(false) => Dynamic::False,
                        Value::String(s) if s == "true" => Dynamic::True,
                        Value::String(s) if s == "false" => Dynamic::False,
                        Value::String(s) if s == "strict" => Dynamic::Strict,
                        other => {
                            return Err(Error::mapper_parsing(format!(
                                "unknown value [{other}] for [dynamic]"
                            )));
                        }
                    }
                }
                "_source" | "_meta" | "date_detection" | "numeric_detection" => {}
                other => {
                    return Err(Error::mapper_parsing(format!(
                        "root mapping definition has unsupported parameters: [{other}]"
                    )));
                }
            }
        }
        Ok(mapping)
    }

    /// Renders the mapping in Elasticsearch's nested `properties` shape.
    pub fn to_es(&self) -> Value {
        let mut root = Map::new();
        for (path, field) in &self.fields {
            let parts: Vec<&str> = path.split('.').collect();
            insert_nested(&mut root, &parts, field.render());
        }
        let mut out = Map::new();
        if self.dynamic != Dynamic::True {
            let dynamic = match self.dynamic {
                Dynamic::False => json!("false"),
                _ => json!("strict"),
            };
            out.insert("dynamic".into(), dynamic);
        }
        out.insert("properties".into(), Value::Object(root));
        Value::Object(out)
    }

    /// All columns: every field and every multi-field, sorted by path.
    pub fn columns(&self) -> Vec<Column> {
        let mut out = Vec::new();
        for (path, field) in &self.fields {
            out.push(Column {
                path: path.clone(),
                mapping: field.clone(),
                source_path: path.clone(),
            });
            for (name, sub) in &field.fields {
                let mut sub = sub.clone();
                sub.multi_valued = field.multi_valued;
                out.push(Column {
                    path: format!("{path}.{name}"),
                    mapping: sub,
                    source_path: path.clone(),
                });
            }
        }
        out
    }

    /// Looks a column (field or multi-field) up by its dotted path.
    pub fn column(&self, path: &str) -> Option<Column> {
        if let Some(field) = self.fields.get(path) {
            return Some(Column {
                path: path.to_string(),
                mapping: field.clone(),
                source_path: path.to_string(),
            });
        }
        let (parent, name) = path.rsplit_once('.')?;
        let field = self.fields.get(parent)?;
        let mut sub = field.fields.get(name)?.clone();
        sub.multi_valued = field.multi_valued;
        Some(Column {
            path: path.to_string(),
            mapping: sub,
            source_path: parent.to_string(),
        })
    }

    /// The mapping Elasticsearch's dynamic mapping gives a new field from its first value.
    pub fn dynamic_for(value: &Scalar<'_>) -> FieldMapping {
        match value {
            Scalar::Bool(_) => FieldMapping::new(FieldType::Boolean),
            Scalar::Number(n) if n.is_i64() || n.is_u64() => FieldMapping::new(FieldType::Long),
            Scalar::Number(_) => FieldMapping::new(FieldType::Float),
            Scalar::Str(s) if crate::date::looks_like_dynamic_date(s) => FieldMapping::new(FieldType::Date),
            Scalar::Str(_) => {
                let mut text = FieldMapping::new(FieldType::Text);
                let mut keyword = FieldMapping::new(FieldType::Keyword);
                keyword.ignore_above = Some(256);
                text.fields.insert("keyword".into(), keyword);
                text
            }
        }
    }
}

fn insert_nested(node: &mut Map<String, Value>, parts: &[&str], leaf: Value) {
    match parts {
        [] => {}
        [last] => {
            node.insert((*last).to_string(), leaf);
        }
        [first, rest @ ..] => {
            let entry = node
                .entry((*first).to_string())
                .or_insert_with(|| json!({"properties": {}}));
            if let Some(props) = entry.get_mut("properties").and_then(Value::as_object_mut) {
                insert_nested(props, rest, leaf);
            }
        }
    }
}

fn parse_properties(prefix: &str, value: &Value, out: &mut BTreeMap<String, FieldMapping>) -> Result<()> {
    let props = value
        .as_object()
        .ok_or_else(|| Error::mapper_parsing("[properties] must be an object"))?;
    for (name, def) in props {
        if name.is_empty() || name.starts_with('_') {
            return Err(Error::mapper_parsing(format!(
                "field name [{name}] is empty or starts with an underscore"
            )));
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let is_object = def.get("properties").is_some()
            || matches!(def.get("type").and_then(Value::as_str), Some("object"));
        if is_object {
            if let Some(inner) = def.get("properties") {
                parse_properties(&path, inner, out)?;
            }
        } else {
            out.insert(path.clone(), FieldMapping::parse(&path, def)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_nested_mappings() -> Result<()> {
        let es = json!({"properties": {
            "title": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
            "user": {"properties": {"name": {"type": "keyword"}, "age": {"type": "integer"}}},
            "ts": {"type": "date", "format": "yyyy-MM-dd"}
        }});
        let mapping = Mapping::from_es(&es)?;
        assert_eq!(
            mapping.fields.keys().collect::<Vec<_>>(),
            vec!["title", "ts", "user.age", "user.name"]
        );
        assert_eq!(mapping.to_es(), es);
        let cols: Vec<String> = mapping.columns().into_iter().map(|c| c.path).collect();
        assert_eq!(
            cols,
            vec!["title", "title.keyword", "ts", "user.age", "user.name"]
        );
        assert_eq!(
            mapping.column("title.keyword").map(|c| c.source_path),
            Some("title".to_string())
        );
        Ok(())
    }

    #[test]
    fn rejects_unknown_types_and_parameters() {
        let bad_type = Mapping::from_es(&json!({"properties": {"a": {"type": "strnig"}}}));
        assert_eq!(
            bad_type.map_err(|e| e.to_string()).err().as_deref(),
            Some("no handler for type [strnig] declared on field [a]")
        );
        let bad_param = Mapping::from_es(&json!({"properties": {"a": {"type": "long", "fomat": 1}}}));
        assert!(bad_param.is_err());
    }

    #[test]
    fn dynamic_rules_follow_elasticsearch() {
        let ty = |v: Scalar| Mapping::dynamic_for(&v).ty;
        assert_eq!(ty(Scalar::Number(3.into())), FieldType::Long);
        let fraction = serde_json::Number::from_f64(3.5).map(Scalar::Number);
        assert_eq!(fraction.map(ty), Some(FieldType::Float));
        assert_eq!(ty(Scalar::Bool(true)), FieldType::Boolean);
        assert_eq!(ty(Scalar::Str("2024-01-02T03:04:05Z")), FieldType::Date);
        assert_eq!(ty(Scalar::Str("hello world")), FieldType::Text);
        let text = Mapping::dynamic_for(&Scalar::Str("x"));
        assert!(text.fields.contains_key("keyword"));
    }
}
