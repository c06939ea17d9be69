//! Turning a JSON `_source` into typed field values following the mapping,
//! mapping unmapped fields dynamically on the way.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::LazyLock;

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::date::DateFormat;
use crate::error::{Error, Result};
use crate::mapping::{Dynamic, FieldMapping, FieldType, Mapping};

/// A typed value of a non-text field, as stored in the columnar store (IP
/// addresses as their canonical text).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    /// Keyword.
    Str(&'a str),
    /// Integer types and dates (epoch milliseconds).
    I64(i64),
    /// Floating point types.
    F64(f64),
    /// Boolean.
    Bool(bool),
}

/// A document's indexable content: each value with its column path, in
/// document order. A path with several values appears once per value. The
/// paths and the string values are kept one after another in one string (a
/// document has one allocation for them, not one per value).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParsedDoc {
    /// Every path and string value, one after another; consecutive values
    /// of one path share it.
    strings: String,
    /// Non-text values, each with its path.
    values: Vec<(PathSpan, Stored)>,
    /// Analyzed text, each with its path.
    text: Vec<(PathSpan, PathSpan)>,
    /// The path the last value was added under.
    last: Option<PathSpan>,
}

/// Where a path or a string value lies in [`ParsedDoc`]'s string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSpan {
    start: usize,
    end: usize,
}

/// A non-text value in [`ParsedDoc`], its string in the document's string.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    Str(PathSpan),
    I64(i64),
    F64(f64),
    Bool(bool),
}

impl ParsedDoc {
    /// Adds a non-text value under `path`.
    pub fn push_value(&mut self, path: &str, value: FieldValue<'_>) {
        let span = self.span(path);
        let stored = match value {
            FieldValue::Str(s) => Stored::Str(self.push_str(s)),
            FieldValue::I64(n) => Stored::I64(n),
            FieldValue::F64(f) => Stored::F64(f),
            FieldValue::Bool(b) => Stored::Bool(b),
        };
        self.values.push((span, stored));
    }

    /// Adds analyzed text under `path`.
    pub fn push_text(&mut self, path: &str, text: &str) {
        let span = self.span(path);
        let text = self.push_str(text);
        self.text.push((span, text));
    }

    fn span(&mut self, path: &str) -> PathSpan {
        if let Some(last) = self.last.filter(|&last| self.path(last) == path) {
            return last;
        }
        let span = self.push_str(path);
        self.last = Some(span);
        span
    }

    fn push_str(&mut self, s: &str) -> PathSpan {
        let start = self.strings.len();
        self.strings.push_str(s);
        PathSpan {
            start,
            end: self.strings.len(),
        }
    }

    /// The path (or string) at `span`.
    pub fn path(&self, span: PathSpan) -> &str {
        &self.strings[span.start..span.end]
    }

    /// How many non-text values the document has.
    pub fn values_len(&self) -> usize {
        self.values.len()
    }

    /// The `i`th non-text value with its path's span.
    pub fn value(&self, i: usize) -> (PathSpan, FieldValue<'_>) {
        let (span, stored) = self.values[i];
        let value = match stored {
            Stored::Str(s) => FieldValue::Str(self.path(s)),
            Stored::I64(n) => FieldValue::I64(n),
            Stored::F64(f) => FieldValue::F64(f),
            Stored::Bool(b) => FieldValue::Bool(b),
        };
        (span, value)
    }

    /// The non-text values with their paths' spans, in document order.
    pub fn values(&self) -> impl Iterator<Item = (PathSpan, FieldValue<'_>)> {
        (0..self.values.len()).map(|i| self.value(i))
    }

    /// How many texts the document has.
    pub fn texts_len(&self) -> usize {
        self.text.len()
    }

    /// The `i`th text with its path's span.
    pub fn text(&self, i: usize) -> (PathSpan, &str) {
        let (span, text) = self.text[i];
        (span, self.path(text))
    }

    /// The texts with their paths' spans, in document order.
    pub fn texts(&self) -> impl Iterator<Item = (PathSpan, &str)> {
        (0..self.text.len()).map(|i| self.text(i))
    }

    /// Text paths that hold at least one token, for `exists` queries (a
    /// non-text value is found by its column). As in Elasticsearch, text
    /// without any token (`""`) does not count. Consecutive texts of a path
    /// (an array, whatever subfield values lie between them) give it once; a
    /// path whose texts lie apart (in an array of objects) comes once per
    /// run, which indexes the same term again in the same document, at no
    /// cost to what is found.
    pub fn text_paths_with_tokens(&self) -> impl Iterator<Item = &str> {
        let mut last = None;
        self.texts().filter_map(move |(span, text)| {
            let path = self.path(span);
            if last == Some(path) || !text.chars().any(char::is_alphanumeric) {
                return None;
            }
            last = Some(path);
            Some(path)
        })
    }
}

/// Fields a document adds to the mapping (new dynamic fields, or fields
/// that became multi-valued), by path.
pub type MappingUpdate = BTreeMap<String, FieldMapping>;

/// Parses the JSON text `source` against `mapping`, walking the text
/// directly (no JSON tree in between; keys and strings are borrowed from the
/// text unless they hold escapes). Returns the typed content and the mapping
/// changes the document needs; the caller applies them only when the whole
/// document parsed.
pub fn parse_document(id: &str, source: &str, mapping: &Mapping) -> Result<(ParsedDoc, MappingUpdate)> {
    parse(id, source, mapping, false)
}

/// Parses a logged source (a translog replay, or a write its primary sent)
/// as [`parse_document`] does, except that a key repeated in one object is
/// kept as one more value: the build that acknowledged the write may have
/// taken it, and an acknowledged document stays searchable.
pub fn parse_logged_document(id: &str, source: &str, mapping: &Mapping) -> Result<ParsedDoc> {
    parse(id, source, mapping, true).map(|(doc, _)| doc)
}

fn parse(
    id: &str,
    source: &str,
    mapping: &Mapping,
    repeated_keys: bool,
) -> Result<(ParsedDoc, MappingUpdate)> {
    let mut parser = Parser {
        id,
        base: mapping,
        added: BTreeMap::new(),
        doc: ParsedDoc::default(),
        seen: HashSet::with_capacity_and_hasher(mapping.fields.len().min(64), BuildHasherDefault::default()),
        seen_unmapped: HashSet::new(),
        repeated_keys,
        error: None,
    };
    let mut de = serde_json::Deserializer::from_str(source);
    let walked = Root(&mut parser).deserialize(&mut de).and_then(|()| de.end());
    if let Some(err) = parser.error {
        return Err(err);
    }
    walked.map_err(|e| Error::document_parsing(format!("failed to parse document with id '{id}': {e}")))?;
    Ok((parser.doc, parser.added))
}

/// Applies a document's mapping update.
pub fn apply_update(mapping: &mut Mapping, update: MappingUpdate) {
    for (path, field) in update {
        mapping.fields.insert(path, field);
    }
}

/// A JSON scalar of a document, its string borrowed from the document's
/// text (or, when it holds escapes, from the parser's buffer).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'s> {
    /// `true` or `false`.
    Bool(bool),
    /// A number, as JSON gives it.
    Number(Number),
    /// A string.
    Str(&'s str),
}

impl<'s> Scalar<'s> {
    /// The scalar as JSON's text renders it, strings without quotes.
    fn text(&self) -> Cow<'s, str> {
        match self {
            Scalar::Bool(b) => Cow::Owned(b.to_string()),
            Scalar::Number(n) => Cow::Owned(n.to_string()),
            Scalar::Str(s) => Cow::Borrowed(s),
        }
    }
}

/// A value converted to its field's type, its string borrowed from the
/// document where it can be.
enum Typed<'s> {
    /// Analyzed text.
    Text(Cow<'s, str>),
    /// A keyword or an IP address.
    Str(Cow<'s, str>),
    Value(FieldValue<'static>),
}

struct Parser<'a> {
    id: &'a str,
    base: &'a Mapping,
    added: MappingUpdate,
    doc: ParsedDoc,
    /// Mapped paths that already got a value in this document, as the
    /// addresses of the mapping's own keys (no copy or hash of the path).
    seen: HashSet<usize, BuildHasherDefault<AddressHasher>>,
    /// Other paths that already got a value in this document (copied).
    seen_unmapped: HashSet<String>,
    /// Whether a key repeated in one object is one more value (else it fails
    /// the document).
    repeated_keys: bool,
    /// Why the document does not fit the mapping: the walk stops at the
    /// first such error, which is then reported instead of the walk's own.
    error: Option<Error>,
}

impl<'a> Parser<'a> {
    fn lookup(&self, path: &str) -> Option<&FieldMapping> {
        self.added.get(path).or_else(|| self.base.fields.get(path))
    }

    /// Whether some mapped field lives under `path.` (so `path` is an object).
    fn has_children(&self, path: &str) -> bool {
        let prefix = format!("{path}.");
        let under = |m: &BTreeMap<String, FieldMapping>| {
            m.range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix))
        };
        under(&self.base.fields) || under(&self.added)
    }

    /// Remembers why the document fails and stops the walk.
    fn fail<E: de::Error>(&mut self, err: Error) -> std::result::Result<(), E> {
        self.error = Some(err);
        Err(E::custom("the document does not fit its mapping"))
    }

    /// The walk of an object's fields under `prefix` (`""` at the root).
    fn object<'de, A: MapAccess<'de>>(
        &mut self,
        prefix: &str,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        let mut path = String::with_capacity(prefix.len() + 32);
        let mut keys = KeySet::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key.is_empty() {
                let err = Error::document_parsing(format!(
                    "field name cannot be empty in document with id '{}'",
                    self.id
                ));
                return self.fail(err);
            }
            if prefix.is_empty() && key.starts_with('_') {
                return self.fail(Error::document_parsing(format!(
                    "field [{key}] is a metadata field and cannot be added inside a document"
                )));
            }
            path.clear();
            if !prefix.is_empty() {
                path.push_str(prefix);
                path.push('.');
            }
            path.push_str(&key);
            if let Err(key) = keys.insert(key)
                && !self.repeated_keys
            {
                return self.fail(Error::document_parsing(format!(
                    "failed to parse: Duplicate field '{key}' in document with id '{}'",
                    self.id
                )));
            }
            map.next_value_seed(ValueSeed {
                parser: &mut *self,
                path: &path,
                in_array: false,
            })?;
        }
        Ok(())
    }

    fn scalar(&mut self, path: &str, value: &Scalar<'_>, in_array: bool) -> Result<()> {
        // A second value for a path (arrays of objects, `a.b` beside `{"a": {"b"}}`)
        // makes the field multi-valued just as an array does.
        let base: &'a Mapping = self.base;
        let mapped = base.fields.get_key_value(path);
        let repeated = match mapped {
            Some((key, _)) => !self.seen.insert(key.as_ptr() as usize),
            None => !self.seen_unmapped.insert(path.to_string()),
        };
        let in_array = repeated || in_array;
        let prefix_is_leaf = path
            .match_indices('.')
            .any(|(i, _)| self.lookup(&path[..i]).is_some());
        // The common case: a field of the mapping the document does not change.
        if !prefix_is_leaf
            && let Some((_, field)) = mapped
            && (!in_array || field.multi_valued)
            && !self.added.contains_key(path)
        {
            return self.add_with_subfields(path, field, value);
        }
        if prefix_is_leaf {
            return Err(Error::document_parsing(format!(
                "failed to parse field [{path}] in document with id '{}': an ancestor of [{path}] is mapped as a concrete field",
                self.id
            )));
        }
        if self.lookup(path).is_none() && self.has_children(path) {
            return Err(Error::document_parsing(format!(
                "failed to parse field [{path}] in document with id '{}': [{path}] is mapped as an object, but found a concrete value",
                self.id
            )));
        }
        match self.lookup(path) {
            None => match self.base.dynamic {
                Dynamic::Strict => {
                    return Err(Error::Mapping {
                        es_type: "strict_dynamic_mapping_exception",
                        reason: format!(
                            "mapping set to strict, dynamic introduction of [{path}] within [_doc] is not allowed"
                        ),
                    });
                }
                Dynamic::False => return Ok(()),
                Dynamic::True => {
                    let mut field = Mapping::dynamic_for(value);
                    field.multi_valued = in_array;
                    self.added.insert(path.to_string(), field);
                }
            },
            Some(field) if in_array && !field.multi_valued => {
                let mut field = field.clone();
                field.multi_valued = true;
                self.added.insert(path.to_string(), field);
            }
            Some(_) => {}
        }
        let owned;
        let field: &FieldMapping = match self.added.get(path) {
            Some(f) => {
                owned = f.clone();
                &owned
            }
            None => base
                .fields
                .get(path)
                .ok_or_else(|| Error::Internal(format!("field [{path}] vanished from the mapping")))?,
        };
        self.add_with_subfields(path, field, value)
    }

    fn add_with_subfields(&mut self, path: &str, field: &FieldMapping, value: &Scalar<'_>) -> Result<()> {
        self.add(path, field, value)?;
        if field.fields.is_empty() {
            return Ok(());
        }
        let mut sub_path = String::with_capacity(path.len() + 16);
        for (name, sub) in &field.fields {
            sub_path.clear();
            sub_path.push_str(path);
            sub_path.push('.');
            sub_path.push_str(name);
            self.add(&sub_path, sub, value)?;
        }
        Ok(())
    }

    fn add(&mut self, path: &str, field: &FieldMapping, value: &Scalar<'_>) -> Result<()> {
        let Some(converted) = convert(field, value) else {
            return Err(self.type_error(path, field, value));
        };
        match converted {
            Some(Typed::Text(t)) => self.doc.push_text(path, &t),
            Some(Typed::Str(s)) => self.doc.push_value(path, FieldValue::Str(&s)),
            Some(Typed::Value(v)) => self.doc.push_value(path, v),
            None => {}
        }
        Ok(())
    }

    fn type_error(&self, path: &str, field: &FieldMapping, value: &Scalar<'_>) -> Error {
        Error::document_parsing(format!(
            "failed to parse field [{path}] of type [{}] in document with id '{}'. Preview of field's value: '{}'",
            field.ty.name(),
            self.id,
            value.text()
        ))
    }
}

/// The keys an object has had so far, so that a repeated key fails the
/// document as in Elasticsearch: a short list, and a hash set beyond it.
struct KeySet<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl Default for KeySet<'_> {
    fn default() -> Self {
        KeySet {
            few: Vec::with_capacity(KeySet::FEW),
            many: HashSet::new(),
        }
    }
}

impl<'de> KeySet<'de> {
    /// Keys kept in the list before they move to the set.
    const FEW: usize = 16;

    /// Adds `key`, or hands it back when the object already has it.
    fn insert(&mut self, key: Cow<'de, str>) -> std::result::Result<(), Cow<'de, str>> {
        if self.many.is_empty() {
            if self.few.contains(&key) {
                return Err(key);
            }
            if self.few.len() < Self::FEW {
                self.few.push(key);
                return Ok(());
            }
            self.many.extend(self.few.drain(..));
        }
        if self.many.contains(&key) {
            return Err(key);
        }
        self.many.insert(key);
        Ok(())
    }
}

/// Hashes an address (of a mapping key, each its own allocation). The
/// product's high half is folded into the low bits, which pick the bucket.
#[derive(Debug, Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 32);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// The document's root, which must be an object.
struct Root<'p, 'a>(&'p mut Parser<'a>);

impl<'de> DeserializeSeed<'de> for Root<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> std::result::Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Root<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<(), A::Error> {
        self.0.object("", map)
    }
}

/// A key of an object (or any string), borrowed from the text when it
/// holds no escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        de.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }
}

/// The value of `path`: a scalar, an array of values, an object or null.
struct ValueSeed<'p, 'a> {
    parser: &'p mut Parser<'a>,
    path: &'p str,
    in_array: bool,
}

impl ValueSeed<'_, '_> {
    fn scalar<E: de::Error>(self, value: Scalar<'_>) -> std::result::Result<(), E> {
        match self.parser.scalar(self.path, &value, self.in_array) {
            Ok(()) => Ok(()),
            Err(err) => self.parser.fail(err),
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> std::result::Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<(), E> {
        self.scalar(Scalar::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<(), E> {
        self.scalar(Scalar::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<(), E> {
        match Number::from_f64(v) {
            Some(n) => self.scalar(Scalar::Number(n)),
            None => Err(E::custom("a number must be finite")),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> std::result::Result<(), E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<(), E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while seq
            .next_element_seed(ValueSeed {
                parser: &mut *self.parser,
                path: self.path,
                in_array: true,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<(), A::Error> {
        let path = self.path;
        if self.parser.lookup(path).is_some() {
            let err = Error::document_parsing(format!(
                "failed to parse field [{path}] in document with id '{}': tried to parse field [{path}] as a concrete value, but found an object",
                self.parser.id
            ));
            return self.parser.fail(err);
        }
        self.parser.object(path, map)
    }
}

/// Converts a scalar JSON value to the field's storage type.
///
/// `None` means the value does not fit the type; `Some(None)` means it is
/// valid but not indexed (a keyword longer than `ignore_above`).
fn convert<'s>(field: &FieldMapping, value: &Scalar<'s>) -> Option<Option<Typed<'s>>> {
    let v = match field.ty {
        FieldType::Keyword => {
            let s = value.text();
            if field
                .ignore_above
                .is_some_and(|max| s.chars().count() > max as usize)
            {
                return Some(None);
            }
            return Some(Some(Typed::Str(s)));
        }
        // Any scalar is text as JSON renders it.
        FieldType::Text => return Some(Some(Typed::Text(value.text()))),
        FieldType::Long | FieldType::Integer | FieldType::Short | FieldType::Byte => {
            let (min, max) = field.ty.integer_range()?;
            let n = match value {
                Scalar::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(truncate_f64))?,
                // Elasticsearch reads a long's string with Java's long and
                // decimal parsers, which do not trim whitespace, and the
                // smaller types' with its double parser, which does.
                Scalar::Str(s) => {
                    let s = if field.ty == FieldType::Long { s } else { s.trim() };
                    s.parse::<i64>()
                        .ok()
                        .or_else(|| s.parse::<f64>().ok().and_then(truncate_f64))?
                }
                _ => return None,
            };
            if n < min || n > max {
                return None;
            }
            FieldValue::I64(n)
        }
        FieldType::Double | FieldType::Float => {
            let f = match value {
                Scalar::Number(n) => n.as_f64()?,
                Scalar::Str(s) => s.trim().parse::<f64>().ok()?,
                _ => return None,
            };
            if !f.is_finite() {
                return None;
            }
            let f = if field.ty == FieldType::Float {
                f64::from(f as f32)
            } else {
                f
            };
            FieldValue::F64(f)
        }
        FieldType::ScaledFloat => {
            let f = match value {
                Scalar::Number(n) => n.as_f64()?,
                Scalar::Str(s) => s.trim().parse::<f64>().ok()?,
                _ => return None,
            };
            let units = (f * field.scaling_factor?).round();
            if !units.is_finite() || units < i64::MIN as f64 || units >= i64::MAX as f64 {
                return None;
            }
            FieldValue::I64(units as i64)
        }
        FieldType::Date => {
            let parsed;
            let format = match &field.format {
                None => DEFAULT_DATE_FORMAT.as_ref()?,
                Some(_) => {
                    parsed = field.date_format().ok()?;
                    &parsed
                }
            };
            FieldValue::I64(match value {
                Scalar::Number(n) => format.parse_number(n)?,
                Scalar::Str(s) => format.parse_str(s)?,
                Scalar::Bool(_) => return None,
            })
        }
        FieldType::Boolean => match value {
            Scalar::Bool(b) => FieldValue::Bool(*b),
            Scalar::Str("true") => FieldValue::Bool(true),
            Scalar::Str("false" | "") => FieldValue::Bool(false),
            _ => return None,
        },
        FieldType::Ip => {
            let Scalar::Str(s) = value else { return None };
            let ip: IpAddr = s.parse().ok()?;
            return Some(Some(Typed::Str(Cow::Owned(ip_to_string(to_v6(ip))))));
        }
    };
    Some(Some(Typed::Value(v)))
}

/// The format of a `date` field that names none, parsed once.
static DEFAULT_DATE_FORMAT: LazyLock<Option<DateFormat>> =
    LazyLock::new(|| DateFormat::parse(DateFormat::DEFAULT).ok());

fn truncate_f64(f: f64) -> Option<i64> {
    (f.is_finite() && f >= i64::MIN as f64 && f <= i64::MAX as f64).then_some(f.trunc() as i64)
}

/// IPv4 addresses are stored IPv4-mapped, as tantivy does.
pub fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Renders a stored IP back in its usual form (IPv4 for mapped addresses).
pub fn ip_to_string(ip: Ipv6Addr) -> String {
    match ip.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => ip.to_string(),
    }
}

/// The values of a dotted path in a JSON source, following objects and arrays.
pub fn values_at<'a>(source: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    match source {
        Value::Array(items) => {
            for item in items {
                values_at(item, path, out);
            }
        }
        Value::Object(obj) => {
            if let Some(v) = obj.get(path) {
                push_leaves(v, out);
            }
            for (i, _) in path.match_indices('.') {
                if let Some(child) = obj.get(&path[..i]) {
                    values_at(child, &path[i + 1..], out);
                }
            }
        }
        _ => {}
    }
}

fn push_leaves<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| push_leaves(i, out)),
        Value::Null | Value::Object(_) => {}
        leaf => out.push(leaf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses a document given as a JSON value.
    fn parse(id: &str, source: &Value, mapping: &Mapping) -> Result<(ParsedDoc, MappingUpdate)> {
        parse_document(id, &source.to_string(), mapping)
    }

    /// The non-text values under `path`, in document order.
    fn vals<'d>(doc: &'d ParsedDoc, path: &str) -> Vec<FieldValue<'d>> {
        doc.values()
            .filter(|(p, _)| doc.path(*p) == path)
            .map(|(_, v)| v)
            .collect()
    }

    /// The texts under `path`, in document order.
    fn texts<'d>(doc: &'d ParsedDoc, path: &str) -> Vec<&'d str> {
        doc.texts()
            .filter(|(p, _)| doc.path(*p) == path)
            .map(|(_, t)| t)
            .collect()
    }

    #[test]
    fn maps_dynamically_and_flattens_objects() -> Result<()> {
        let mut mapping = Mapping::default();
        let src = json!({"user": {"name": "ann", "age": 31}, "tags": ["a", "b"], "score": 1.5, "ok": true});
        let (doc, update) = parse("1", &src, &mapping)?;
        assert_eq!(update.len(), 5);
        apply_update(&mut mapping, update);
        assert_eq!(mapping.fields["user.age"].ty, FieldType::Long);
        assert_eq!(mapping.fields["user.name"].ty, FieldType::Text);
        assert!(mapping.fields["tags"].multi_valued);
        assert_eq!(vals(&doc, "user.age"), vec![FieldValue::I64(31)]);
        assert_eq!(vals(&doc, "user.name.keyword"), vec![FieldValue::Str("ann")]);
        assert_eq!(texts(&doc, "tags"), vec!["a", "b"]);
        assert_eq!(vals(&doc, "score"), vec![FieldValue::F64(1.5)]);
        assert_eq!(vals(&doc, "ok"), vec![FieldValue::Bool(true)]);
        Ok(())
    }

    #[test]
    fn a_repeated_key_fails_the_document() -> Result<()> {
        let mapping = Mapping::default();
        let many: Vec<String> = (0..20).map(|i| format!("\"k{i}\":{i}")).collect();
        for source in [
            r#"{"a":1,"a":2}"#.to_string(),
            r#"{"o":{"x":1},"o":{"y":2}}"#.to_string(),
            r#"{"a":1,"\u0061":2}"#.to_string(),
            format!("{{{},\"k3\":0}}", many.join(",")),
        ] {
            let err = parse_document("1", &source, &mapping).err();
            assert_eq!(
                err.as_ref().map(Error::es_type),
                Some("document_parsing_exception"),
                "{source}"
            );
            assert!(err.is_some_and(|e| e.to_string().contains("Duplicate field")));
        }
        // The same path by two routes is two values, not a repeated key.
        let (doc, _) = parse_document("1", r#"{"a.b":1,"a":{"b":2}}"#, &mapping)?;
        assert_eq!(vals(&doc, "a.b"), vec![FieldValue::I64(1), FieldValue::I64(2)]);
        assert!(parse_document("1", &format!("{{{}}}", many.join(",")), &mapping).is_ok());
        // A logged source keeps a repeated key as one more value.
        let doc = parse_logged_document("1", r#"{"a":1,"a":2}"#, &mapping)?;
        assert_eq!(vals(&doc, "a"), vec![FieldValue::I64(1), FieldValue::I64(2)]);
        Ok(())
    }

    #[test]
    fn text_paths_with_tokens_name_each_run_of_a_path_once() -> Result<()> {
        let src = json!({"tags": ["a", "b", "c"], "empty": "", "o": [{"t": "x"}, {"t": "y"}]});
        let (doc, _) = parse("1", &src, &Mapping::default())?;
        let paths: Vec<&str> = doc.text_paths_with_tokens().collect();
        assert_eq!(paths, vec!["tags", "o.t"]);
        Ok(())
    }

    #[test]
    fn each_value_keeps_its_own_path() {
        let mut doc = ParsedDoc::default();
        doc.push_value("a", FieldValue::I64(1));
        doc.push_value("a", FieldValue::I64(2));
        doc.push_text("b", "x");
        doc.push_value("a.c", FieldValue::I64(3));
        doc.push_value("a", FieldValue::I64(4));
        let paths: Vec<&str> = doc.values().map(|(p, _)| doc.path(p)).collect();
        assert_eq!(paths, vec!["a", "a", "a.c", "a"]);
        assert_eq!(texts(&doc, "b"), vec!["x"]);
        assert_eq!(
            vals(&doc, "a"),
            vec![FieldValue::I64(1), FieldValue::I64(2), FieldValue::I64(4)]
        );
    }

    #[test]
    fn value_that_does_not_fit_fails_the_document() -> Result<()> {
        let mapping = Mapping::from_es(&json!({"properties": {"n": {"type": "integer"}}}))?;
        let err = parse("7", &json!({"n": "abc"}), &mapping).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some(
                "failed to parse field [n] of type [integer] in document with id '7'. Preview of field's value: 'abc'"
            )
        );
        assert!(parse("8", &json!({"n": 3_000_000_000i64}), &mapping).is_err());
        let (doc, _) = parse("9", &json!({"n": "42"}), &mapping)?;
        assert_eq!(vals(&doc, "n"), vec![FieldValue::I64(42)]);
        Ok(())
    }

    #[test]
    fn repeated_values_make_a_field_multi_valued() -> Result<()> {
        let mapping = Mapping::default();
        let (doc, update) = parse("1", &json!({"l": [{"x": 1}, {"x": 2}]}), &mapping)?;
        assert!(update["l.x"].multi_valued);
        assert_eq!(vals(&doc, "l.x"), vec![FieldValue::I64(1), FieldValue::I64(2)]);
        Ok(())
    }

    #[test]
    fn a_path_is_either_an_object_or_a_value() -> Result<()> {
        let mut mapping = Mapping::default();
        let (_, update) = parse("1", &json!({"a": {"b": 1}}), &mapping)?;
        apply_update(&mut mapping, update);
        let err = parse("2", &json!({"a": 2}), &mapping).err();
        assert_eq!(err.map(|e| e.es_type()), Some("document_parsing_exception"));
        assert!(parse("3", &json!({"a": {"b": 3}}), &mapping).is_ok());
        Ok(())
    }

    #[test]
    fn strict_mapping_rejects_new_fields() -> Result<()> {
        let mapping = Mapping::from_es(&json!({"dynamic": "strict", "properties": {}}))?;
        let err = parse("1", &json!({"x": 1}), &mapping).err();
        assert_eq!(err.map(|e| e.es_type()), Some("strict_dynamic_mapping_exception"));
        Ok(())
    }

    #[test]
    fn finds_values_by_dotted_path() {
        let src = json!({"a": {"b": [1, 2]}, "a.c": 3, "l": [{"x": 1}, {"x": 2}]});
        let mut out = Vec::new();
        values_at(&src, "a.b", &mut out);
        assert_eq!(out, vec![&json!(1), &json!(2)]);
        out.clear();
        values_at(&src, "a.c", &mut out);
        assert_eq!(out, vec![&json!(3)]);
        out.clear();
        values_at(&src, "l.x", &mut out);
        assert_eq!(out, vec![&json!(1), &json!(2)]);
    }
}
