//! The plan codec of the leaves: how a [`TantivyScanExec`] or a
//! [`TantivyAggregateExec`] travels from the coordinator to the data node
//! that runs it.
//!
//! A leaf is sent as the index name and incarnation, the shards to read, the
//! mapping the coordinator planned with, and the leaf's own parameters; the
//! data node finds the index in its [`Indices`] (a session extension) and
//! reads its local shards.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::{DataFusionError, Result, not_impl_err};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::agg_pushdown::{AggWire, TantivyAggregateExec};
use crate::index::Index;
use crate::indices::Indices;
use crate::mapping::Mapping;
use crate::query::LeafQuery;
use crate::scan::{ScanSort, ShardSet, TantivyScanExec};
use crate::stats::TermStats;
use crate::table::table_schema;

/// Encodes and decodes the tantivy leaves of a plan.
#[derive(Debug, Default, Clone, Copy)]
pub struct TantivyCodec;

#[derive(Serialize, Deserialize)]
struct LeafWire {
    index: String,
    uuid: String,
    shards: ShardSet,
    mapping: Mapping,
    leaf: Leaf,
}

#[derive(Serialize, Deserialize)]
enum Leaf {
    Scan {
        projection: Vec<usize>,
        query: LeafQuery,
        sort: Option<ScanSort>,
        fetch: Option<usize>,
        stats: Option<TermStats>,
    },
    Aggregate {
        wire: AggWire,
        /// The output schema, as DataFusion's protobuf.
        schema: Vec<u8>,
    },
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl TantivyCodec {
    fn index(indices: &Indices, name: &str, uuid: &str) -> Result<Arc<Index>> {
        match indices.get_current(name, Some(uuid)) {
            Err(crate::Error::IndexNotFound(_)) if indices.get(name).is_ok() => {
                Err(DataFusionError::Plan(format!(
                    "index [{name}] on this node is another incarnation than the one the query was planned on"
                )))
            }
            other => other.map_err(external),
        }
    }
}

impl PhysicalExtensionCodec for TantivyCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Internal("a tantivy leaf has no inputs".into()));
        }
        let indices = ctx.session_config().get_extension::<Indices>().ok_or_else(|| {
            DataFusionError::Internal("this node's session has no indices to read shards from".into())
        })?;
        decode_leaf(buf, &indices)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        *buf = encode_leaf(node.as_ref())?;
        Ok(())
    }
}

/// A tantivy leaf rebuilt over this node's indices.
pub fn decode_leaf(buf: &[u8], indices: &Indices) -> Result<Arc<dyn ExecutionPlan>> {
    let wire: LeafWire = serde_json::from_slice(buf).map_err(external)?;
    let index = TantivyCodec::index(indices, &wire.index, &wire.uuid)?;
    let mapping = Arc::new(wire.mapping);
    match wire.leaf {
        Leaf::Scan {
            projection,
            query,
            sort,
            fetch,
            stats,
        } => {
            let schema = table_schema(&mapping);
            Ok(Arc::new(
                TantivyScanExec::with_shard_set(
                    index,
                    wire.shards,
                    mapping,
                    projection,
                    query,
                    sort,
                    fetch,
                    schema,
                )?
                .with_stats(stats.map(Arc::new)),
            ))
        }
        Leaf::Aggregate { wire: agg, schema } => {
            let proto = datafusion_proto::protobuf::Schema::decode(schema.as_slice()).map_err(external)?;
            let schema = Schema::try_from(&proto)?;
            Ok(Arc::new(TantivyAggregateExec::from_wire(
                index,
                wire.shards,
                mapping,
                agg,
                Arc::new(schema),
            )?))
        }
    }
}

/// The bytes of a tantivy leaf; an error for any other plan.
pub fn encode_leaf(node: &dyn ExecutionPlan) -> Result<Vec<u8>> {
    let wire = if let Some(scan) = node.downcast_ref::<TantivyScanExec>() {
        let (projection, sort, fetch) = scan.parts();
        LeafWire {
            index: scan.index().name(),
            uuid: scan.index().uuid(),
            shards: scan.shard_set().clone(),
            mapping: scan.mapping().as_ref().clone(),
            leaf: Leaf::Scan {
                projection: projection.to_vec(),
                query: scan.query().clone(),
                sort: sort.cloned(),
                fetch,
                stats: scan.stats().map(|s| s.as_ref().clone()),
            },
        }
    } else if let Some(agg) = node.downcast_ref::<TantivyAggregateExec>() {
        let schema = datafusion_proto::protobuf::Schema::try_from(agg.schema().as_ref())?;
        LeafWire {
            index: agg.index().name(),
            uuid: agg.index().uuid(),
            shards: agg.shard_set().clone(),
            mapping: agg.mapping().as_ref().clone(),
            leaf: Leaf::Aggregate {
                wire: agg.to_wire(),
                schema: schema.encode_to_vec(),
            },
        }
    } else {
        return not_impl_err!("not a tantivy leaf: {}", node.name());
    };
    serde_json::to_vec(&wire).map_err(external)
}
