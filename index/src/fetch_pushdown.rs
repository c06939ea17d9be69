//! A physical optimizer rule that gives a per-partition limit to the scan
//! under it, through a projection: `LocalLimitExec(n)` over
//! `ProjectionExec` over `TantivyScanExec` makes the scan stop (or keep its
//! top `n`) at `n` rows per shard. DataFusion's own limit pushdown stops at
//! projections that add columns (the DSL's `_index` literal), which left a
//! top-k scan collecting every match.
//!
//! It also gives a top-k over a union (the indices of an alias or a
//! pattern) to each branch: `SortExec(fetch k)` over `UnionExec` keeps
//! its sort, which merges the branches, and each branch's scan sorts and
//! keeps its own top `k` per shard, rather than sending every match up.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sort_pushdown::SortOrderPushdownResult;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::union::UnionExec;

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

/// A top-k sort over a union with the sort and the fetch given to each
/// branch that takes them exactly (a scan, through its projection); the
/// sort stays above to merge the branches.
fn push_into_union(sort: &SortExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let (Some(fetch), Some(union)) = (sort.fetch(), sort.input().downcast_ref::<UnionExec>()) else {
        return Ok(None);
    };
    let mut changed = false;
    let mut branches = Vec::with_capacity(union.children().len());
    for branch in union.children() {
        // The union's columns are each branch's columns, in order.
        branches.push(match branch.try_pushdown_sort(sort.expr())? {
            SortOrderPushdownResult::Exact { inner } => {
                changed = true;
                match inner.with_fetch(Some(fetch)) {
                    Some(fetched) => fetched,
                    // A projection takes no fetch: the limit above it goes
                    // to the scan under it, as for any such limit.
                    None => {
                        let limit = LocalLimitExec::new(inner, fetch);
                        push(&limit)?.unwrap_or_else(|| Arc::new(limit))
                    }
                }
            }
            _ => Arc::clone(branch),
        });
    }
    if !changed {
        return Ok(None);
    }
    let union = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
        Arc::clone(sort.input()),
        branches,
    )?;
    let sort = SortExec::new(sort.expr().clone(), union)
        .with_fetch(Some(fetch))
        .with_preserve_partitioning(sort.preserve_partitioning());
    Ok(Some(Arc::new(sort)))
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
        replace_nodes(plan, |node| {
            if let Some(limit) = node.downcast_ref::<LocalLimitExec>() {
                return push(limit);
            }
            match node.downcast_ref::<SortExec>() {
                Some(sort) => push_into_union(sort),
                None => Ok(None),
            }
        })
    }

    fn name(&self) -> &str {
        "tantivy_fetch_pushdown"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
