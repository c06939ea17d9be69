//! The tantivy schema every shard uses.
//!
//! The fields mapped when an index is created each get a tantivy field of
//! their own: `_field.<path>` for a non-text value (indexed and fast, i.e.
//! columnar) and `_analyzed.<path>` for analyzed text with positions.
//! Fields mapped later (dynamic mapping, `PUT _mapping`) cannot change a
//! tantivy schema, so they live in two JSON fields: `_kw` holds their
//! non-text values (raw-tokenized, indexed and fast) and `_text` their
//! analyzed text. Dotted paths inside those are the column paths of the
//! mapping. Readers find a path through [`Fields`].

use std::sync::Arc;

use tantivy::schema::{
    FAST, Field, IndexRecordOption, JsonObjectOptions, NumericOptions, STRING, Schema, TextFieldIndexing,
    TextOptions,
};

use crate::error::{Error, Result};
use crate::mapping::FieldType;

/// Field names of the shard schema.
pub mod names {
    /// Document id (raw term, fast column).
    pub const ID: &str = "_id";
    /// Document version (fast column).
    pub const VERSION: &str = "_version";
    /// Shard sequence number of the last write (fast column).
    pub const SEQ_NO: &str = "_seq_no";
    /// Original JSON (doc store).
    pub const SOURCE: &str = "_source";
    /// Non-text values of fields mapped after creation (JSON, raw, fast).
    pub const KW: &str = "_kw";
    /// Text of fields mapped after creation (JSON, analyzed, positions).
    pub const TEXT: &str = "_text";
    /// Text paths present in the document, for `exists` queries.
    pub const EXISTS: &str = "_exists";
    /// Root of the own fields of non-text paths: `_field.<path>`.
    pub const FIELD: &str = "_field";
    /// Root of the own fields of text paths: `_analyzed.<path>`.
    pub const ANALYZED: &str = "_analyzed";
}

/// Handles of the schema fields.
#[derive(Debug, Clone)]
pub struct Fields {
    /// `_id`.
    pub id: Field,
    /// `_version`.
    pub version: Field,
    /// `_seq_no`.
    pub seq_no: Field,
    /// `_source`.
    pub source: Field,
    /// `_kw`.
    pub kw: Field,
    /// `_text`.
    pub text: Field,
    /// `_exists`.
    pub exists: Field,
    /// The paths with a field of their own (looked up for every value a
    /// shard writes, so hashed with foldhash rather than SipHash).
    own: Arc<foldhash::HashMap<String, Field>>,
}

impl Fields {
    /// The handles of a shard schema.
    pub fn of(schema: &Schema) -> Result<Fields> {
        let field = |name: &str| {
            schema
                .get_field(name)
                .map_err(|_| Error::Internal(format!("shard schema has no field [{name}]")))
        };
        let mut own = foldhash::HashMap::default();
        for (field, entry) in schema.fields() {
            let path = entry
                .name()
                .strip_prefix(names::FIELD)
                .or_else(|| entry.name().strip_prefix(names::ANALYZED))
                .and_then(|rest| rest.strip_prefix('.'));
            if let Some(path) = path {
                own.insert(path.to_string(), field);
            }
        }
        Ok(Fields {
            id: field(names::ID)?,
            version: field(names::VERSION)?,
            seq_no: field(names::SEQ_NO)?,
            source: field(names::SOURCE)?,
            kw: field(names::KW)?,
            text: field(names::TEXT)?,
            exists: field(names::EXISTS)?,
            own: Arc::new(own),
        })
    }

    /// The field of its own of column `path`, if it has one.
    pub fn own(&self, path: &str) -> Option<Field> {
        self.own.get(path).copied()
    }

    /// The columnar (fast field) name of non-text column `path`.
    pub fn column(&self, path: &str) -> String {
        match self.own.contains_key(path) {
            true => format!("{}.{path}", names::FIELD),
            false => format!("{}.{path}", names::KW),
        }
    }
}

/// Builds the shard schema, with a field of its own for each of `own`, a
/// column path and its type.
pub fn build<'a>(own: impl IntoIterator<Item = (&'a str, FieldType)>) -> Schema {
    let mut b = Schema::builder();
    // Ids and presence are matched, never scored: no field norms.
    b.add_text_field(
        names::ID,
        (STRING | FAST).set_indexing_options(raw().set_fieldnorms(false)),
    );
    b.add_u64_field(names::VERSION, FAST);
    b.add_u64_field(names::SEQ_NO, FAST);
    b.add_text_field(names::SOURCE, TextOptions::default().set_stored());
    let kw_opts = JsonObjectOptions::default()
        .set_indexing_options(raw())
        .set_fast("raw")
        .set_expand_dots_enabled();
    b.add_json_field(names::KW, kw_opts);
    let text_opts = JsonObjectOptions::default()
        .set_indexing_options(analyzed())
        .set_expand_dots_enabled();
    b.add_json_field(names::TEXT, text_opts);
    b.add_text_field(
        names::EXISTS,
        STRING.set_indexing_options(raw().set_fieldnorms(false)),
    );
    // No field norms on the fields of their own either: a JSON field has
    // none, and a score must not depend on how many values (or tokens) a
    // document has in a field whether it was mapped at creation or later.
    let numeric = || NumericOptions::default().set_indexed().set_fast();
    let keyword = || {
        TextOptions::default()
            .set_indexing_options(raw().set_fieldnorms(false))
            .set_fast("raw")
    };
    for (path, ty) in own {
        let value = format!("{}.{path}", names::FIELD);
        match ty {
            FieldType::Text => {
                let opts = TextOptions::default().set_indexing_options(analyzed().set_fieldnorms(false));
                b.add_text_field(&format!("{}.{path}", names::ANALYZED), opts);
            }
            FieldType::Keyword | FieldType::Ip => {
                b.add_text_field(&value, keyword());
            }
            FieldType::Long
            | FieldType::Integer
            | FieldType::Short
            | FieldType::Byte
            | FieldType::ScaledFloat
            | FieldType::Date => {
                b.add_i64_field(&value, numeric());
            }
            FieldType::Double | FieldType::Float => {
                b.add_f64_field(&value, numeric());
            }
            FieldType::Boolean => {
                b.add_bool_field(&value, numeric());
            }
        }
    }
    b.build()
}

/// How exact values are indexed: whole, without frequencies.
fn raw() -> TextFieldIndexing {
    TextFieldIndexing::default()
        .set_tokenizer("raw")
        .set_index_option(IndexRecordOption::Basic)
}

/// How text is analyzed: the default tokenizer, with positions.
fn analyzed() -> TextFieldIndexing {
    TextFieldIndexing::default()
        .set_tokenizer("default")
        .set_index_option(IndexRecordOption::WithFreqsAndPositions)
}
