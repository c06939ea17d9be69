//! The SQL full-text functions `match(field, 'text')`,
//! `match_phrase(field, 'text')` and `query_string('query')`, and
//! `search_query('json')`, which carries a whole [`LeafQuery`] (the JSON DSL
//! compiles its `query` to it).
//!
//! They have no row-by-row implementation: the index scan absorbs them as
//! tantivy queries. Anywhere else (inside an `OR` with an expression the scan
//! cannot run, in a projection, over a non-index table) they are an error.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

use crate::query::LeafQuery;

/// `match(field, 'text')`.
pub const MATCH: &str = "match";
/// `match_phrase(field, 'text')`.
pub const MATCH_PHRASE: &str = "match_phrase";
/// `query_string('query')`.
pub const QUERY_STRING: &str = "query_string";

/// `search_query('json')`: a serialized [`LeafQuery`].
pub const SEARCH_QUERY: &str = "search_query";

/// Whether `name` is one of the full-text functions.
pub fn is_fulltext_function(name: &str) -> bool {
    matches!(name, MATCH | MATCH_PHRASE | QUERY_STRING | SEARCH_QUERY)
}

/// The filter expression that makes a scan run `query`.
pub fn search_query_expr(query: &LeafQuery) -> Result<Expr> {
    let json = serde_json::to_string(query).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let udf = ScalarUDF::new_from_impl(FullTextFunction {
        name: SEARCH_QUERY,
        signature: Signature::any(1, Volatility::Immutable),
    });
    Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf),
        vec![lit(json)],
    )))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FullTextFunction {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for FullTextFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // A field an index does not map (a NULL in its branch of a union of
        // indices) holds no text: it matches nothing, as in Elasticsearch.
        if matches!(self.name, MATCH | MATCH_PHRASE)
            && matches!(args.args.first(), Some(ColumnarValue::Scalar(field)) if field.is_null())
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))));
        }
        plan_err!("{}", not_absorbed_message(self.name))
    }
}

/// The error for a full-text function the scan could not absorb.
pub fn not_absorbed_message(name: &str) -> String {
    format!(
        "{name}() can only be used as a condition of the WHERE clause over an index, combined with AND, OR and NOT with conditions on indexed fields; it cannot be evaluated row by row here"
    )
}

/// The three full-text functions, to register in a session.
pub fn fulltext_udfs() -> Vec<Arc<ScalarUDF>> {
    [
        (MATCH, 2),
        (MATCH_PHRASE, 2),
        (QUERY_STRING, 1),
        (SEARCH_QUERY, 1),
    ]
    .into_iter()
    .map(|(name, arity)| {
        Arc::new(ScalarUDF::new_from_impl(FullTextFunction {
            name,
            signature: Signature::any(arity, Volatility::Immutable),
        }))
    })
    .collect()
}
