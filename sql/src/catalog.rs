//! The catalog: every index is a table of `quidditch.public`, and so is
//! every alias; an alias that names several indices, a pattern
//! (`"logs-*"`) or a list (`"a,b"`) is the union of their rows.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast, lit};
use quidditch_index::Indices;
use quidditch_index::index::Index;
use quidditch_index::table::IndexTable;

/// The catalog name.
pub const CATALOG: &str = "quidditch";
/// The schema name.
pub const SCHEMA: &str = "public";

/// A schema whose tables are the indices of a node, resolved at planning
/// time so that new indices and new mapped fields appear at once.
#[derive(Debug)]
pub struct IndexSchemaProvider {
    indices: Arc<Indices>,
}

impl IndexSchemaProvider {
    /// A schema over these indices.
    pub fn new(indices: Arc<Indices>) -> Self {
        IndexSchemaProvider { indices }
    }
}

impl IndexSchemaProvider {
    /// The table a name reads: an index, an alias of one, or the union of
    /// the indices an alias, a pattern or a list names.
    fn provider(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Ok(index) = self.indices.single_index(name) {
            return Ok(Some(Arc::new(IndexTable::new(index))));
        }
        match self.indices.resolve(name) {
            Ok(mut indices) if indices.len() == 1 => Ok(Some(Arc::new(IndexTable::new(indices.remove(0))))),
            Ok(indices) if indices.is_empty() => Ok(None),
            Ok(indices) => union_table(indices).map(Some),
            Err(quidditch_index::Error::IndexNotFound(_)) => Ok(None),
            // An index that did not open answers why, not "no such table".
            Err(err) => Err(DataFusionError::External(Box::new(err))),
        }
    }
}

#[async_trait]
impl SchemaProvider for IndexSchemaProvider {
    /// The indices, and the aliases that can be read as a table (an alias
    /// over indices with columns of no shared type, or over an index that
    /// did not open, is left out rather than failing the whole listing).
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.indices.list().iter().map(|i| i.name()).collect();
        let aliases: std::collections::BTreeSet<String> = self
            .indices
            .alias_state()
            .into_values()
            .flat_map(|aliases| aliases.into_keys())
            .collect();
        names.extend(
            aliases
                .into_iter()
                .filter(|alias| matches!(self.provider(alias), Ok(Some(_)))),
        );
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.provider(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.indices
            .resolve(name)
            .is_ok_and(|indices| !indices.is_empty())
    }
}

/// The rows of several indices as one table, a view over the union of
/// their scans (so each scan still takes the filters, limits and full-text
/// functions pushed down to it): every column any of them has, NULL where
/// an index lacks it, of the type they share (whole numbers of different
/// widths as `Int64`, other numbers as `Float64`).
fn union_table(indices: Vec<Arc<Index>>) -> Result<Arc<dyn TableProvider>> {
    let tables: Vec<Arc<IndexTable>> = indices
        .into_iter()
        .map(|i| Arc::new(IndexTable::new(i)))
        .collect();
    let mut columns: Vec<(String, DataType)> = Vec::new();
    for table in &tables {
        for field in table.schema().fields() {
            match columns.iter_mut().find(|(name, _)| name == field.name()) {
                None => columns.push((field.name().clone(), field.data_type().clone())),
                Some((name, ty)) => *ty = shared_type(name, ty, field.data_type())?,
            }
        }
    }
    let mut union: Option<LogicalPlanBuilder> = None;
    for table in tables {
        let schema = table.schema();
        let exprs: Vec<Expr> = columns
            .iter()
            .map(|(name, ty)| {
                let value = match schema.field_with_name(name) {
                    Ok(field) if field.data_type() == ty => Expr::Column(Column::new_unqualified(name)),
                    Ok(_) => cast(Expr::Column(Column::new_unqualified(name)), ty.clone()),
                    Err(_) => cast(lit(ScalarValue::Null), ty.clone()),
                };
                value.alias(name)
            })
            .collect();
        let reference = TableReference::bare(table.index().name());
        let plan = LogicalPlanBuilder::scan(reference, provider_as_source(table), None)?
            .project(exprs)?
            .build()?;
        union = Some(match union {
            None => LogicalPlanBuilder::from(plan),
            Some(union) => union.union(plan)?,
        });
    }
    let plan = union
        .ok_or_else(|| DataFusionError::Internal("a union of no indices".into()))?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The type two indices' columns of one name share: strings of any
/// encoding as `Utf8`, whole numbers of different widths as `Int64`, other
/// numbers as `Float64`, and a value beside a list of such values (a field
/// that held an array in one index) as that list.
fn shared_type(name: &str, a: &DataType, b: &DataType) -> Result<DataType> {
    let is_string = |t: &DataType| match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, value) => matches!(**value, DataType::Utf8),
        _ => false,
    };
    let element = |t: &DataType| match t {
        DataType::List(field) => field.data_type().clone(),
        other => other.clone(),
    };
    Ok(match (a, b) {
        _ if a == b => a.clone(),
        (DataType::List(_), _) | (_, DataType::List(_)) => {
            let shared = shared_type(name, &element(a), &element(b))?;
            DataType::List(Arc::new(Field::new_list_field(shared, true)))
        }
        _ if is_string(a) && is_string(b) => DataType::Utf8,
        _ if a.is_integer() && b.is_integer() => DataType::Int64,
        _ if a.is_numeric() && b.is_numeric() => DataType::Float64,
        _ => {
            return Err(DataFusionError::Plan(format!(
                "column [{name}] is {a} in one index and {b} in another: the indices cannot be read as one table"
            )));
        }
    })
}

/// Registers the index catalog (as the default catalog) and the full-text functions.
pub fn register_catalog(ctx: &SessionContext, indices: Arc<Indices>) -> Result<()> {
    let catalog = MemoryCatalogProvider::new();
    datafusion::catalog::CatalogProvider::register_schema(
        &catalog,
        SCHEMA,
        Arc::new(IndexSchemaProvider::new(indices)),
    )?;
    ctx.register_catalog(CATALOG, Arc::new(catalog));
    for udf in quidditch_index::fulltext::fulltext_udfs() {
        ctx.register_udf(udf.as_ref().clone());
    }
    Ok(())
}
