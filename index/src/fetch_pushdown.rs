//! A physical optimizer rule that gives a per-partition limit to the scan
//! under it, through a projection: `LocalLimitExec(n)` over
//! `ProjectionExec` over `TantivyScanExec` makes the scan stop (or keep its
//! top `n`) at `n` rows per shard. DataFusion's own limit pushdown stops at
//! projections that add columns (the DSL's `_index` literal), which left a
//! top-k scan collecting every match.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;

use crate::scan::TantivyScanExec;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct FetchPushdown;

/// The plan under a per-partition limit with the limit given to its scan.
fn push(limit: &LocalLimitExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let fetch = limit.fetch();
    let input = limit.input();
    let projection = input.downcast_ref::<ProjectionExec>();
    let scan_plan = projection.map_or(input, |p| p.input());
    let Some(scan) = scan_plan.downcast_ref::<TantivyScanExec>() else {
        return Ok(None);
    };
    if scan.fetch().is_some_and(|f| f <= fetch) {
        return Ok(None);
    }
    let Some(scan) = scan.with_fetch(Some(fetch)) else {
        return Ok(None);
    };
    let below = match projection {
        Some(_) => datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            Arc::clone(input),
            vec![scan],
        )?,
        None => scan,
    };
    Ok(Some(Arc::new(LocalLimitExec::new(below, fetch))))
}

/// Replaces, bottom up, every node for which `f` gives a replacement.
pub(crate) fn replace_nodes(
    plan: Arc<dyn ExecutionPlan>,
    f: impl Fn(&Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(match f(&node)? {
            Some(replacement) => Transformed::yes(replacement),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

impl PhysicalOptimizerRule for FetchPushdown {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_nodes(plan, |node| match node.downcast_ref::<LocalLimitExec>() {
            Some(limit) => push(limit),
            None => Ok(None),
        })
    }

    fn name(&self) -> &str {
        "tantivy_fetch_pushdown"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
