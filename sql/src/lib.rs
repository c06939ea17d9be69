//! Quidditch's SQL front end.
//!
//! Every index is a table of the `quidditch.public` schema ([`catalog`]);
//! the full-text functions `match`, `match_phrase` and `query_string` are
//! registered in every session; [`plan_sql`] turns SQL text into an optimized
//! DataFusion logical plan and rejects full-text functions that the index
//! scan could not absorb.

pub mod catalog;
pub mod error;
pub mod params;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::logical_expr::{Expr, LogicalPlan};

pub use catalog::{IndexSchemaProvider, register_catalog};
pub use error::{Error, Result};
use quidditch_index::fulltext::{is_fulltext_function, not_absorbed_message};

/// Plans a SQL statement: parse, analyze, optimize, and check that every
/// full-text function was absorbed by an index scan.
pub async fn plan_sql(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan> {
    let plan = ctx.state().create_logical_plan(sql).await?;
    check_read_only(&plan)?;
    let optimized = ctx.state().optimize(&plan)?;
    check_fulltext_absorbed(&optimized)?;
    Ok(optimized)
}

/// Fails for anything but a query: DDL (`CREATE ...`), DML (`INSERT`,
/// `COPY ... TO`, which would write files as the node) and statements
/// (`SET`) would bypass the index write path or the node's configuration.
pub fn check_read_only(plan: &LogicalPlan) -> Result<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(plan)
        .map_err(|e| {
            Error::BadRequest(format!(
                "{} (Quidditch SQL only reads: write through _bulk or Flight DoPut)",
                e.strip_backtrace()
            ))
        })
}

/// Fails when a full-text function remains anywhere but in an index scan's filters.
pub fn check_fulltext_absorbed(plan: &LogicalPlan) -> Result<()> {
    let mut found: Option<String> = None;
    plan.apply(|node| {
        if matches!(node, LogicalPlan::TableScan(_)) {
            return Ok(TreeNodeRecursion::Continue);
        }
        for expr in node.expressions() {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && is_fulltext_function(f.func.name())
                {
                    found = Some(f.func.name().to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    match found {
        Some(name) => Err(Error::BadRequest(not_absorbed_message(&name))),
        None => Ok(()),
    }
}
