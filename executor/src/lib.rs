//! Query execution: building DataFusion sessions over a node's indices and
//! running logical plans from the SQL and DSL front ends.
//!
//! On the embedded node every plan runs in-process over local shards. In a
//! cluster the session carries the distributed planner ([`distributed`]):
//! leaf stages run on the data nodes that hold the shards, and the
//! coordinator merges.

pub mod distributed;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SessionConfig, SessionContext, SessionState};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use futures::TryStreamExt;
use quidditch_index::Indices;
use quidditch_index::agg_pushdown::AggregatePushdown;
use quidditch_sql::{Result, catalog, plan_sql, register_catalog};

/// Execution settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Partitions DataFusion uses for operators above the scans (default: cores).
    pub target_partitions: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Memory limit of the operators of the queries running on the node, in
    /// bytes (`None`: unlimited).
    pub memory_limit: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_size: 8192,
            memory_limit: Some(4 << 30),
        }
    }
}

/// Builds sessions and runs queries over the indices of a node.
#[derive(Clone)]
pub struct Engine {
    indices: Arc<Indices>,
    config: EngineConfig,
    placement: Option<distributed::Placement>,
    /// Configuration, catalog and functions, built once: each query's
    /// session starts from a copy of it with its own memory pool.
    base: SessionState,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish()
    }
}

/// The schema and batches of a finished query.
#[derive(Debug)]
pub struct QueryOutput {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
}

impl Engine {
    /// An engine over these indices, every shard local.
    pub fn new(indices: Arc<Indices>, config: EngineConfig) -> Result<Engine> {
        Engine::build(indices, config, None)
    }

    /// An engine of a cluster node: plans are distributed over the data
    /// nodes of `membership`; tasks for this node run in-process on `local`.
    pub fn clustered(
        indices: Arc<Indices>,
        config: EngineConfig,
        membership: Arc<dyn quidditch_cluster::Membership>,
        liveness: Arc<quidditch_cluster::Liveness>,
        local: Option<datafusion_distributed::LocalWorkerContext>,
    ) -> Result<Engine> {
        let placement = distributed::Placement::new(membership, liveness);
        Engine::build(indices, config, Some((placement, local)))
    }

    fn build(
        indices: Arc<Indices>,
        config: EngineConfig,
        cluster: Option<(
            distributed::Placement,
            Option<datafusion_distributed::LocalWorkerContext>,
        )>,
    ) -> Result<Engine> {
        let mut session_config = SessionConfig::new();
        // `0.06` is an exact number, as in standard SQL: compared with a
        // `scaled_float` (decimal) column it stays exact.
        session_config.options_mut().sql_parser.parse_float_as_decimal = true;
        let session_config =
            session_config.with_option_extension(quidditch_index::table::QuidditchOptions::default());
        let session_config = session_config
            .with_default_catalog_and_schema(catalog::CATALOG, catalog::SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_target_partitions(config.target_partitions)
            .with_batch_size(config.batch_size)
            // In a cluster, data nodes aggregate their shards (Partial) and
            // the coordinator merges the partial groups (Final): what
            // crosses the network is bounded by groups times shards.
            .with_repartition_aggregations(cluster.is_none());
        let ctx = SessionContext::new_with_config(session_config);
        register_catalog(&ctx, Arc::clone(&indices))?;
        // The aggregate pushdown sees the plan as the planner made it (Final
        // over Partial over the scan): before distribution requirements add
        // repartitions in between or merge the two steps.
        let mut rules = PhysicalOptimizer::new().rules;
        let at = rules
            .iter()
            .position(|r| r.name() == "EnsureRequirements")
            .unwrap_or(rules.len());
        rules.insert(at, Arc::new(AggregatePushdown));
        // After DataFusion's limit pushdown, which leaves limits above
        // projections, and before the final sanity check.
        let at = rules
            .iter()
            .position(|r| r.name() == "SanityCheckPlan")
            .unwrap_or(rules.len());
        rules.insert(at, Arc::new(quidditch_index::fetch_pushdown::FetchPushdown));
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = config.memory_limit {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        }
        let mut base = SessionStateBuilder::new_from_existing(ctx.state())
            .with_physical_optimizer_rules(rules)
            .with_runtime_env(runtime.build_arc()?);
        let mut placement = None;
        if let Some((p, local)) = cluster {
            base = distributed::coordinator_state(base, p.clone())?;
            if let Some(local) = local {
                base = datafusion_distributed::DistributedExt::with_distributed_local_worker_context(
                    base, local,
                );
            }
            placement = Some(p);
        }
        Ok(Engine {
            indices,
            config,
            placement,
            base: base.build(),
        })
    }

    /// The execution settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The indices.
    pub fn indices(&self) -> &Arc<Indices> {
        &self.indices
    }

    /// A new session: default catalog `quidditch.public` holding every index,
    /// full-text functions registered, and the node's bounded memory pool,
    /// which the queries running at the same time share.
    pub fn session(&self) -> Result<SessionContext> {
        let Some(placement) = &self.placement else {
            return Ok(SessionContext::new_with_state(self.base.clone()));
        };
        // Leaf stages have one task per slot; the slots follow the cluster.
        let slots = placement.slots()?.len();
        let state = datafusion_distributed::DistributedExt::with_distributed_max_tasks_per_stage(
            SessionStateBuilder::new_from_existing(self.base.clone()),
            slots,
        )?;
        Ok(SessionContext::new_with_state(state.build()))
    }

    /// A new session where SQL answers without the shards no node can
    /// serve, when `allow` (the setting `quidditch.allow_partial_results`).
    pub fn session_allowing_partial(&self, allow: bool) -> Result<SessionContext> {
        let ctx = self.session()?;
        if allow {
            ctx.state_ref()
                .write()
                .config_mut()
                .options_mut()
                .set("quidditch.allow_partial_results", "true")?;
        }
        Ok(ctx)
    }

    /// Plans a SQL statement in a fresh session.
    pub async fn plan(&self, sql: &str) -> Result<(SessionContext, LogicalPlan)> {
        self.plan_in(self.session()?, sql).await
    }

    /// Plans a SQL statement in `ctx`.
    pub async fn plan_in(&self, ctx: SessionContext, sql: &str) -> Result<(SessionContext, LogicalPlan)> {
        let plan = plan_sql(&ctx, sql).await?;
        Ok((ctx, plan))
    }

    /// Runs a SQL statement, streaming its result.
    pub async fn sql_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        self.sql_stream_in(self.session()?, sql).await
    }

    /// Runs a SQL statement in `ctx`, streaming its result.
    pub async fn sql_stream_in(&self, ctx: SessionContext, sql: &str) -> Result<SendableRecordBatchStream> {
        let (ctx, plan) = self.plan_in(ctx, sql).await?;
        if let LogicalPlan::Explain(explain) = &plan
            && self.placement.is_some()
        {
            return self.explain_distributed(&ctx, explain).await;
        }
        let df = ctx.execute_logical_plan(plan).await?;
        Ok(df.execute_stream().await?)
    }

    /// `EXPLAIN` in a cluster: DataFusion's own explain never calls the
    /// distributed planner, so the plan that would run is made here and
    /// drawn with its stages, tasks and the shards and node of each task.
    async fn explain_distributed(
        &self,
        ctx: &SessionContext,
        explain: &datafusion::logical_expr::Explain,
    ) -> Result<SendableRecordBatchStream> {
        use datafusion::arrow::array::StringArray;
        let physical = ctx.state().create_physical_plan(&explain.plan).await?;
        let plan_types = StringArray::from(vec!["logical_plan", "distributed_plan"]);
        let plans = StringArray::from(vec![
            explain.plan.display_indent().to_string(),
            display_physical(physical.as_ref()),
        ]);
        let schema = Arc::new(explain.schema.as_arrow().clone());
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(plan_types), Arc::new(plans)])
            .map_err(datafusion::error::DataFusionError::from)?;
        Ok(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter([Ok(batch)]),
            ),
        ))
    }

    /// Runs a SQL statement and collects its result.
    pub async fn sql(&self, sql: &str) -> Result<QueryOutput> {
        self.sql_in(self.session()?, sql).await
    }

    /// Runs a SQL statement in `ctx` and collects its result.
    pub async fn sql_in(&self, ctx: SessionContext, sql: &str) -> Result<QueryOutput> {
        let stream = self.sql_stream_in(ctx, sql).await?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok(QueryOutput { schema, batches })
    }
}

/// A physical plan as text: a distributed plan with its stages and the
/// shards and node of every task, any other plan indented.
pub fn display_physical(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> String {
    if plan
        .downcast_ref::<datafusion_distributed::DistributedExec>()
        .is_some()
    {
        datafusion_distributed::display_plan_ascii(plan, false)
    } else {
        datafusion::physical_plan::displayable(plan)
            .indent(true)
            .to_string()
    }
}

/// Arrow arrays, re-exported for callers that read query results.
pub use datafusion::arrow::array as arrow_array;
