//! Global term statistics (Elasticsearch's `dfs_query_then_fetch` idea):
//! the BM25 numbers of a query's terms summed over every shard of an index,
//! so that a document's `_score` does not depend on how the index is
//! sharded or which shard the document landed in.
//!
//! Before a scoring scan runs, the statistics of its query are gathered
//! from every shard (a round trip to each data node in a cluster) and sent
//! with the scan; each shard then scores with them instead of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tantivy::query::Bm25StatisticsProvider;
use tantivy::schema::{Field, Schema};
use tantivy::{Searcher, Term};

use crate::error::Result;
use crate::mapping::Mapping;
use crate::query::LeafQuery;
use crate::shard::Shard;

/// The statistics of a query's terms over some shards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TermStats {
    /// Documents.
    pub docs: u64,
    /// Tokens per field name.
    pub tokens: BTreeMap<String, u64>,
    /// Document frequency per field name and serialized term value (hex).
    pub doc_freq: BTreeMap<String, BTreeMap<String, u64>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TermStats {
    /// The statistics of `query`'s terms in one shard.
    pub fn of_shard(shard: &Shard, mapping: &Mapping, query: &LeafQuery) -> Result<TermStats> {
        let searcher = shard.searcher();
        let compiled = query.compile(mapping, shard.fields(), shard.tantivy_index())?;
        let schema = shard.tantivy_index().schema();
        let mut terms: Vec<Term> = Vec::new();
        compiled.query_terms(&mut |term, _| terms.push(term.clone()));
        // Documents as tantivy counts them for BM25: deleted ones included,
        // as in the document frequencies.
        let mut stats = TermStats {
            docs: Bm25StatisticsProvider::total_num_docs(&searcher)?,
            ..TermStats::default()
        };
        for term in terms {
            let name = schema.get_field_name(term.field()).to_string();
            if !stats.tokens.contains_key(&name) {
                let tokens = Bm25StatisticsProvider::total_num_tokens(&searcher, term.field())?;
                stats.tokens.insert(name.clone(), tokens);
            }
            let df = searcher.doc_freq(&term)?;
            stats
                .doc_freq
                .entry(name)
                .or_default()
                .insert(hex(term.serialized_value_bytes()), df);
        }
        Ok(stats)
    }

    /// Adds another shard's statistics.
    pub fn merge(&mut self, other: TermStats) {
        self.docs += other.docs;
        for (field, tokens) in other.tokens {
            *self.tokens.entry(field).or_default() += tokens;
        }
        for (field, terms) in other.doc_freq {
            let mine = self.doc_freq.entry(field).or_default();
            for (term, df) in terms {
                *mine.entry(term).or_default() += df;
            }
        }
    }

    /// A statistics provider for one shard's searcher: these numbers where
    /// they have the term, the shard's own otherwise.
    pub(crate) fn provider<'a>(&'a self, searcher: &'a Searcher, schema: &'a Schema) -> GlobalProvider<'a> {
        GlobalProvider {
            stats: self,
            searcher,
            schema,
        }
    }
}

/// [`Bm25StatisticsProvider`] over [`TermStats`].
pub(crate) struct GlobalProvider<'a> {
    stats: &'a TermStats,
    searcher: &'a Searcher,
    schema: &'a Schema,
}

impl Bm25StatisticsProvider for GlobalProvider<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        match self.stats.tokens.get(self.schema.get_field_name(field)) {
            Some(tokens) => Ok(*tokens),
            None => Bm25StatisticsProvider::total_num_tokens(self.searcher, field),
        }
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.stats.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let known = self
            .stats
            .doc_freq
            .get(self.schema.get_field_name(term.field()))
            .and_then(|terms| terms.get(&hex(term.serialized_value_bytes())));
        match known {
            Some(df) => Ok(*df),
            None => self.searcher.doc_freq(term),
        }
    }
}
