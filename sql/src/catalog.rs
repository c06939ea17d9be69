//! The catalog: every index is a table of `quidditch.public`, and so is
//! every alias that names one index.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionContext;
use quidditch_index::Indices;
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

#[async_trait]
impl SchemaProvider for IndexSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.indices.list().iter().map(|i| i.name()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.indices.single_index(name) {
            Ok(index) => Ok(Some(Arc::new(IndexTable::new(index)))),
            Err(quidditch_index::Error::IndexNotFound(_)) => Ok(None),
            // An index that did not open answers why, not "no such table".
            Err(err) => Err(DataFusionError::External(Box::new(err))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.indices.single_index(name).is_ok()
    }
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
