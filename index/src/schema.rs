//! The tantivy schema every shard uses.
//!
//! Mapped fields live in two JSON fields, so that dynamic mapping never needs
//! a schema change: `_kw` holds every non-text value (raw-tokenized, indexed
//! and fast, i.e. columnar) and `_text` holds analyzed text with positions.
//! Dotted paths inside them are the column paths of the mapping.

use tantivy::schema::Field;
use tantivy::schema::{
    FAST, IndexRecordOption, JsonObjectOptions, STRING, Schema, TextFieldIndexing, TextOptions,
};

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
    /// Non-text mapped values (JSON, raw, fast).
    pub const KW: &str = "_kw";
    /// Text mapped values (JSON, analyzed, positions).
    pub const TEXT: &str = "_text";
    /// Text paths present in the document, for `exists` queries.
    pub const EXISTS: &str = "_exists";
}

/// Handles of the schema fields.
#[derive(Debug, Clone, Copy)]
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
}

/// Builds the shard schema.
pub fn build() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let id = b.add_text_field(names::ID, STRING | FAST);
    let version = b.add_u64_field(names::VERSION, FAST);
    let seq_no = b.add_u64_field(names::SEQ_NO, FAST);
    let source = b.add_text_field(names::SOURCE, TextOptions::default().set_stored());
    let kw_opts = JsonObjectOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::Basic),
        )
        .set_fast("raw")
        .set_expand_dots_enabled();
    let kw = b.add_json_field(names::KW, kw_opts);
    let text_opts = JsonObjectOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_expand_dots_enabled();
    let text = b.add_json_field(names::TEXT, text_opts);
    let exists = b.add_text_field(names::EXISTS, STRING);
    let fields = Fields {
        id,
        version,
        seq_no,
        source,
        kw,
        text,
        exists,
    };
    (b.build(), fields)
}

/// The columnar (fast field) name of a non-text column path.
pub fn kw_column(path: &str) -> String {
    format!("{}.{path}", names::KW)
}
