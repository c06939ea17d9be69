//! Plain Flight for `pyarrow.flight`: a ticket (or a command descriptor) is
//! JSON, `{"sql": "..."}` or `{"index": "...", "search": {DSL body}}`; a path
//! descriptor `[index]` names a whole index.

use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use quidditch_executor::Engine;
use serde_json::{Value, json};
use tonic::Status;

use crate::error::{df_status, dsl_status, sql_status};
use crate::stream::{self, FlightDataStream, encode_stream, flight_schema};

/// Largest ticket or command accepted.
pub const MAX_TICKET: usize = 1 << 20;

/// What a plain Flight ticket asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum PlainRequest {
    /// A SQL statement.
    Sql(String),
    /// The hits of a DSL search over an index expression, as rows.
    Search {
        /// Index expression (`logs`, `a,b`, `logs-*`).
        index: String,
        /// The search body.
        body: Option<Value>,
    },
}

const TICKET_SHAPE: &str =
    r#"a ticket is a JSON object, {"sql": "..."} or {"index": "...", "search": {...}}"#;

impl PlainRequest {
    /// Parses a JSON ticket.
    pub fn parse(bytes: &[u8]) -> Result<PlainRequest, Status> {
        if bytes.len() > MAX_TICKET {
            return Err(Status::invalid_argument(format!(
                "ticket of {} bytes is larger than the limit of {MAX_TICKET} bytes",
                bytes.len()
            )));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            Status::invalid_argument(format!("ticket is not valid JSON ({e}): {TICKET_SHAPE}"))
        })?;
        let Value::Object(obj) = value else {
            return Err(Status::invalid_argument(TICKET_SHAPE));
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "sql" | "index" | "search"))
        {
            return Err(Status::invalid_argument(format!(
                "unknown ticket field [{k}]: {TICKET_SHAPE}"
            )));
        }
        match (obj.get("sql"), obj.get("index"), obj.get("search")) {
            (Some(Value::String(sql)), None, None) => Ok(PlainRequest::Sql(sql.clone())),
            (None, Some(Value::String(index)), search) => {
                let body = match search {
                    None | Some(Value::Null) => None,
                    Some(v @ Value::Object(_)) => Some(v.clone()),
                    Some(_) => return Err(Status::invalid_argument("[search] must be a JSON object")),
                };
                Ok(PlainRequest::Search {
                    index: index.clone(),
                    body,
                })
            }
            _ => Err(Status::invalid_argument(TICKET_SHAPE)),
        }
    }

    /// The request of a descriptor: a JSON command, or a path `[index]`
    /// (every row of the index).
    pub fn from_descriptor(descriptor: &FlightDescriptor) -> Result<PlainRequest, Status> {
        if !descriptor.path.is_empty() {
            return match descriptor.path.as_slice() {
                [index] => Ok(PlainRequest::Sql(select_all(index))),
                _ => Err(Status::invalid_argument(
                    "a path descriptor has one element, the index name",
                )),
            };
        }
        PlainRequest::parse(&descriptor.cmd)
    }

    /// The JSON ticket of this request.
    pub fn ticket(&self) -> Ticket {
        let value = match self {
            PlainRequest::Sql(sql) => json!({"sql": sql}),
            PlainRequest::Search { index, body } => json!({"index": index, "search": body}),
        };
        Ticket::new(value.to_string())
    }
}

/// `SELECT *` over one index.
pub fn select_all(index: &str) -> String {
    format!("SELECT * FROM \"{}\"", index.replace('"', "\"\""))
}

/// Plans a request in a fresh session.
pub async fn plan(engine: &Engine, request: &PlainRequest) -> Result<(SessionContext, LogicalPlan), Status> {
    match request {
        PlainRequest::Sql(sql) => engine.plan(sql).await.map_err(sql_status),
        PlainRequest::Search { index, body } => {
            let ctx = engine.session().map_err(sql_status)?;
            let plan = quidditch_planner::hits_rows(
                &ctx,
                engine.indices(),
                index,
                body.as_ref(),
                &Default::default(),
            )
            .map_err(dsl_status)?;
            Ok((ctx, plan))
        }
    }
}

/// Runs a request, streaming its rows.
pub async fn execute(engine: &Engine, request: &PlainRequest) -> Result<FlightDataStream, Status> {
    let (ctx, plan) = plan(engine, request).await?;
    run_plan(ctx, plan).await
}

/// Runs a planned query, streaming its rows in the schema [`flight_schema`] gives.
pub async fn run_plan(ctx: SessionContext, plan: LogicalPlan) -> Result<FlightDataStream, Status> {
    let schema = flight_schema(plan.schema().as_arrow());
    let df = ctx.execute_logical_plan(plan).await.map_err(df_status)?;
    let stream = df.execute_stream().await.map_err(df_status)?;
    Ok(encode_stream(schema, stream))
}

/// The `FlightInfo` of a request: its schema and one endpoint whose ticket
/// runs it on this node.
pub async fn flight_info(
    engine: &Engine,
    request: &PlainRequest,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let (_, plan) = plan(engine, request).await?;
    stream::flight_info(
        &flight_schema(plan.schema().as_arrow()),
        request.ticket(),
        descriptor,
    )
}

/// One `FlightInfo` per index, with its row count, for `ListFlights`.
pub async fn list(engine: &Engine) -> Result<Vec<FlightInfo>, Status> {
    let mut out = Vec::new();
    for index in engine.indices().list() {
        let name = index.name();
        let descriptor = FlightDescriptor::new_path(vec![name.clone()]);
        let request = PlainRequest::Sql(select_all(&name));
        let info = flight_info(engine, &request, descriptor)
            .await?
            .with_total_records(index.num_docs() as i64);
        out.push(info);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_parse_and_round_trip() -> Result<(), Status> {
        let sql = PlainRequest::parse(br#"{"sql": "SELECT 1"}"#)?;
        assert_eq!(sql, PlainRequest::Sql("SELECT 1".into()));
        assert_eq!(PlainRequest::parse(&sql.ticket().ticket)?, sql);
        let search = PlainRequest::parse(br#"{"index": "logs", "search": {"size": 3}}"#)?;
        assert_eq!(
            search,
            PlainRequest::Search {
                index: "logs".into(),
                body: Some(json!({"size": 3}))
            }
        );
        assert_eq!(PlainRequest::parse(&search.ticket().ticket)?, search);
        Ok(())
    }

    #[test]
    fn bad_tickets_are_invalid_arguments() {
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"sql": 1}"#,
            br#"{"sql": "x", "index": "y"}"#,
            br#"{"query": "x"}"#,
            br#"{"index": "x", "search": 3}"#,
        ] {
            let err = PlainRequest::parse(bad).err();
            assert_eq!(
                err.map(|e| e.code()),
                Some(tonic::Code::InvalidArgument),
                "{bad:?}"
            );
        }
        let huge = vec![b' '; MAX_TICKET + 1];
        let err = PlainRequest::parse(&huge).err();
        assert!(err.is_some_and(|e| e.message().contains("larger than the limit")));
    }
}
