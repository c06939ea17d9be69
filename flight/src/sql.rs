//! The Flight SQL service: statements, prepared statements with bound
//! parameters, and the catalog commands ADBC, JDBC and BI tools ask for.
//!
//! A statement's ticket carries its SQL text, so any node can run it and
//! nothing is kept between `GetFlightInfo` and `DoGet`. Prepared statements
//! live in memory on the node that created them until they are closed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult, Nullable,
    ProstMessageExt, Searchable, SqlInfo, SqlSupportedCaseSensitivity, TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, PutResult, SchemaAsIpc,
    Ticket,
};
use bytes::Bytes;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use futures::{Stream, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use quidditch_executor::Engine;
use quidditch_sql::params::{bind, prepare};
use tonic::{Request, Response, Status, Streaming};

use crate::error::{df_status, sql_status};
use crate::plain;
use crate::stream::{self, FlightDataStream, encode_batches, flight_schema};
use crate::{AuthGate, ingest};

/// Prepared statements a node keeps open at most.
const MAX_PREPARED: usize = 10_000;

/// Execution tickets (`GetFlightInfo` of a prepared statement) kept at
/// most; past it the oldest is dropped, so tickets never redeemed cannot
/// crowd out statements.
const MAX_PENDING_RUNS: usize = 1_000;

/// How long an unused prepared statement stays open.
const PREPARED_IDLE: Duration = Duration::from_secs(30 * 60);

/// A prepared statement: its SQL and the values bound last.
#[derive(Debug, Clone)]
struct Prepared {
    sql: String,
    params: Vec<ScalarValue>,
    /// Last use: statements idle longer than [`PREPARED_IDLE`] are dropped
    /// (clients that crash never close theirs).
    used: Instant,
    /// An execution of a statement with the values bound when its
    /// `FlightInfo` was made, redeemed once by `DoGet`: binding new values
    /// afterwards does not change what that ticket returns.
    run_once: bool,
}

/// The Flight SQL side of a node's Flight service.
pub struct FlightSql {
    engine: Engine,
    auth: Option<Arc<AuthGate>>,
    prepared: Mutex<HashMap<Bytes, Prepared>>,
    sql_info: SqlInfoData,
    xdbc_info: XdbcTypeInfoData,
}

impl std::fmt::Debug for FlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSql")
            .field("engine", &self.engine)
            .field("prepared", &self.prepared.lock().len())
            .finish()
    }
}

fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(format!("cannot encode schema: {e}")))?;
    Ok(bytes)
}

fn sql_info() -> Result<SqlInfoData, Status> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Quidditch");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    // Unquoted identifiers are folded to lowercase; quoted ones are kept as
    // written (Flight SQL has no "case-sensitive" value: unknown).
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    b.build().map_err(|e| Status::internal(format!("SqlInfo: {e}")))
}

fn xdbc_type(name: &str, data_type: XdbcDataType, column_size: Option<i32>) -> XdbcTypeInfo {
    let text = matches!(data_type, XdbcDataType::XdbcVarchar);
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: text.then(|| "'".into()),
        literal_suffix: text.then(|| "'".into()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: text,
        searchable: Searchable::Full,
        unsigned_attribute: (!text).then_some(false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    }
}

fn xdbc_info() -> Result<XdbcTypeInfoData, Status> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(xdbc_type("BOOLEAN", XdbcDataType::XdbcBit, Some(1)));
    b.append(xdbc_type("BIGINT", XdbcDataType::XdbcBigint, Some(64)));
    b.append(xdbc_type("FLOAT", XdbcDataType::XdbcFloat, Some(24)));
    b.append(xdbc_type("DOUBLE", XdbcDataType::XdbcDouble, Some(53)));
    b.append(xdbc_type("VARCHAR", XdbcDataType::XdbcVarchar, None));
    b.append(xdbc_type("TIMESTAMP", XdbcDataType::XdbcTimestamp, None));
    b.build()
        .map_err(|e| Status::internal(format!("XdbcTypeInfo: {e}")))
}

/// The schema `GetPrimaryKeys` answers with (Quidditch tables have none).
fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Parameter `$n` of a plan, in order, as a schema.
fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, Status> {
    let types = plan.get_parameter_types().map_err(df_status)?;
    let mut named: Vec<(usize, String, DataType)> = types
        .into_iter()
        .map(|(name, ty)| {
            let n = name
                .trim_start_matches('$')
                .parse::<usize>()
                .unwrap_or(usize::MAX);
            (n, name, ty.unwrap_or(DataType::Null))
        })
        .collect();
    named.sort();
    Ok(Schema::new(
        named
            .into_iter()
            .map(|(_, name, ty)| Field::new(name, ty, true))
            .collect::<Vec<_>>(),
    ))
}

impl FlightSql {
    /// The service over a node's engine.
    pub fn new(engine: Engine, auth: Option<Arc<AuthGate>>) -> Result<FlightSql, Status> {
        Ok(FlightSql {
            engine,
            auth,
            prepared: Mutex::new(HashMap::new()),
            sql_info: sql_info()?,
            xdbc_info: xdbc_info()?,
        })
    }

    /// The engine queries run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn prepared(&self, handle: &[u8]) -> Result<Prepared, Status> {
        let mut prepared = self.prepared.lock();
        let entry = prepared.get_mut(handle).ok_or_else(|| {
            Status::not_found(
                "unknown prepared statement handle (closed, expired, or created on another node)",
            )
        })?;
        entry.used = Instant::now();
        let found = entry.clone();
        if found.run_once {
            prepared.remove(handle);
        }
        Ok(found)
    }

    /// Keeps a statement (or one execution of it) and returns its handle.
    fn register(&self, sql: String, params: Vec<ScalarValue>, run_once: bool) -> Result<Bytes, Status> {
        let mut prepared = self.prepared.lock();
        let now = Instant::now();
        prepared.retain(|_, p| now.duration_since(p.used) < PREPARED_IDLE);
        if run_once && prepared.values().filter(|p| p.run_once).count() >= MAX_PENDING_RUNS {
            let oldest = prepared
                .iter()
                .filter(|(_, p)| p.run_once)
                .min_by_key(|(_, p)| p.used)
                .map(|(h, _)| h.clone());
            if let Some(h) = oldest {
                prepared.remove(&h);
            }
        }
        if !run_once && prepared.values().filter(|p| !p.run_once).count() >= MAX_PREPARED {
            return Err(Status::resource_exhausted(format!(
                "{MAX_PREPARED} prepared statements are open on this node: close some first"
            )));
        }
        let handle = Bytes::from(uuid::Uuid::new_v4().to_string());
        prepared.insert(
            handle.clone(),
            Prepared {
                sql,
                params,
                used: now,
                run_once,
            },
        );
        Ok(handle)
    }

    /// Plans a prepared statement with its bound values.
    async fn bound_plan(&self, handle: &[u8]) -> Result<(SessionContext, LogicalPlan), Status> {
        self.plan_bound(self.prepared(handle)?).await
    }

    /// Plans a statement with the values bound to it.
    async fn plan_bound(&self, prepared: Prepared) -> Result<(SessionContext, LogicalPlan), Status> {
        let ctx = self.engine.session().map_err(sql_status)?;
        let plan = prepare(&ctx, &prepared.sql).await.map_err(sql_status)?;
        let bound = bind(&ctx, &plan, prepared.params).map_err(sql_status)?;
        Ok((ctx, bound))
    }

    /// Every table of the session's catalogs with its type and schema.
    async fn catalog_tables(&self) -> Result<Vec<TableEntry>, Status> {
        let ctx = self.engine.session().map_err(sql_status)?;
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table in schema.table_names() {
                    let Some(provider) = schema.table(&table).await.map_err(df_status)? else {
                        continue;
                    };
                    let table_type = match provider.table_type() {
                        TableType::Base => "TABLE",
                        TableType::View => "VIEW",
                        TableType::Temporary => "LOCAL TEMPORARY",
                    };
                    out.push(TableEntry {
                        catalog: catalog_name.clone(),
                        schema: schema_name.clone(),
                        table,
                        table_type,
                        arrow_schema: flight_schema(&provider.schema()),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// A table as the catalog commands list it.
struct TableEntry {
    catalog: String,
    schema: String,
    table: String,
    table_type: &'static str,
    arrow_schema: SchemaRef,
}

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

fn descriptor_of<T>(request: Request<T>) -> T {
    request.into_inner()
}

/// The `FlightInfo` of a catalog command: its result schema, and the
/// command itself as the ticket.
fn command_info(
    schema: &Schema,
    command: &impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    Ok(Response::new(stream::flight_info(
        schema,
        Ticket::new(command.as_any().encode_to_vec()),
        descriptor_of(request),
    )?))
}

/// A catalog answer built in memory, as a `DoGet` stream.
fn one_batch<E: std::fmt::Display>(
    schema: SchemaRef,
    batch: Result<RecordBatch, E>,
) -> Result<Response<FlightDataStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("building the catalog answer: {e}")))?;
    Ok(Response::new(encode_batches(schema, vec![batch])))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let (payload, bearer) = match &self.auth {
            None => (Bytes::new(), None),
            Some(auth) => {
                let header = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                let user = auth.check(header).await.map_err(Status::unauthenticated)?;
                let token = auth.issue_token(&user);
                (Bytes::from(token.clone()), Some(token))
            }
        };
        let output = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload,
        })]);
        let mut response: Response<HandshakeStream> = Response::new(Box::pin(output));
        if let Some(token) = bearer {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (_, plan) = self.engine.plan(&query.query).await.map_err(sql_status)?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let info = stream::flight_info(
            &flight_schema(plan.schema().as_arrow()),
            Ticket::new(ticket.as_any().encode_to_vec()),
            descriptor_of(request),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement handle is not UTF-8 SQL"))?;
        let ctx = self
            .engine
            .session_allowing_partial(allows_partial(request.metadata()))
            .map_err(sql_status)?;
        let (ctx, plan) = self.engine.plan_in(ctx, &sql).await.map_err(sql_status)?;
        Ok(Response::new(plain::run_plan(ctx, plan).await?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        // One read: the schema and the ticket come from the same values.
        let statement = self.prepared(&cmd.prepared_statement_handle)?;
        let (_, plan) = self.plan_bound(statement.clone()).await?;
        let run = CommandPreparedStatementQuery {
            prepared_statement_handle: self.register(statement.sql, statement.params, true)?,
        };
        let info = stream::flight_info(
            &flight_schema(plan.schema().as_arrow()),
            Ticket::new(run.as_any().encode_to_vec()),
            descriptor_of(request),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let (ctx, plan) = self.bound_plan(&cmd.prepared_statement_handle).await?;
        Ok(Response::new(plain::run_plan(ctx, plan).await?))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let mut builder = query.into_builder();
        let ctx = self.engine.session().map_err(sql_status)?;
        let mut names = ctx.catalog_names();
        names.sort();
        for name in names {
            builder.append(name);
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let mut builder = query.into_builder();
        let ctx = self.engine.session().map_err(sql_status)?;
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    builder.append(&catalog_name, schema_name);
                }
            }
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let mut builder = query.into_builder();
        for t in self.catalog_tables().await? {
            builder
                .append(&t.catalog, &t.schema, &t.table, t.table_type, &t.arrow_schema)
                .map_err(Status::from)?;
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let builder = query.into_builder(&self.sql_info);
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.xdbc_info).schema();
        command_info(&schema, &query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let builder = query.into_builder(&self.xdbc_info);
        one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&primary_keys_schema(), &query, request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let schema = primary_keys_schema();
        let empty = RecordBatch::new_empty(Arc::clone(&schema));
        Ok(Response::new(encode_batches(schema, vec![empty])))
    }

    async fn do_put_fallback(
        &self,
        mut request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        let descriptor = match request.get_mut().peek().await {
            Some(Ok(first)) => first.flight_descriptor.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => None,
        };
        let index = match descriptor.as_ref().map(|d| d.path.as_slice()) {
            Some([index]) => index.clone(),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "DoPut needs a path descriptor naming the index, [index], or a Flight SQL command (got [{}])",
                    message.type_url
                )));
            }
        };
        let data = request.into_inner().map_err(FlightError::from);
        let summary = ingest::put(Arc::clone(self.engine.indices()), &index, data).await?;
        if let Some((rejected, first)) = summary.rejected {
            return Err(Status::invalid_argument(format!(
                "{rejected} of {} rows were rejected by index [{index}] ({} written); the first: {first}",
                summary.rows, summary.written
            )));
        }
        let metadata = serde_json::json!({
            "index": index,
            "rows": summary.rows,
            "written": summary.written,
            "created_index": summary.created_index,
        });
        let output = futures::stream::iter(vec![Ok(PutResult {
            app_metadata: Bytes::from(metadata.to_string()),
        })]);
        Ok(Response::new(Box::pin(output)))
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = query.prepared_statement_handle;
        self.prepared(&handle)?;
        let mut batches =
            FlightRecordBatchStream::new_from_flight_data(request.into_inner().map_err(FlightError::from));
        let mut params: Option<Vec<ScalarValue>> = None;
        while let Some(batch) = batches.try_next().await.map_err(Status::from)? {
            if batch.num_rows() == 0 {
                continue;
            }
            if params.is_some() || batch.num_rows() > 1 {
                return Err(Status::invalid_argument(
                    "a query binds one row of parameters; run it once per row",
                ));
            }
            params = Some(
                batch
                    .columns()
                    .iter()
                    .map(|c: &ArrayRef| ScalarValue::try_from_array(c, 0))
                    .collect::<Result<_, _>>()
                    .map_err(df_status)?,
            );
        }
        match self.prepared.lock().get_mut(&handle) {
            Some(p) => p.params = params.unwrap_or_default(),
            None => return Err(Status::not_found("unknown prepared statement handle")),
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let ctx = self.engine.session().map_err(sql_status)?;
        let plan = prepare(&ctx, &query.query).await.map_err(sql_status)?;
        let dataset_schema = schema_bytes(&flight_schema(plan.schema().as_arrow()))?;
        let parameter_schema = schema_bytes(&parameter_schema(&plan)?)?;
        let handle = self.register(query.query, Vec::new(), false)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        match self.prepared.lock().remove(&query.prepared_statement_handle) {
            Some(_) => Ok(()),
            None => Err(Status::not_found("unknown prepared statement handle")),
        }
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The call header that allows partial results for the statements of a
/// connection (ADBC: `adbc.flight.sql.rpc.call_header.x-quidditch-allow-partial-results`).
pub const ALLOW_PARTIAL_HEADER: &str = "x-quidditch-allow-partial-results";

/// Whether a call's headers allow partial results.
fn allows_partial(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get(ALLOW_PARTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_ordered_by_position() -> Result<(), Status> {
        let ctx = SessionContext::new();
        let plan =
            futures::executor::block_on(prepare(&ctx, "SELECT ? + 1, ? || 'x'")).map_err(sql_status)?;
        let schema = parameter_schema(&plan)?;
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["$1", "$2"]);
        Ok(())
    }
}
