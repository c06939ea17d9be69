//! Prepared statements over a real Flight SQL server on a free port, driven
//! by arrow-flight's own Flight SQL client.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use quidditch_executor::{Engine, EngineConfig};
use quidditch_flight::{FlightConfig, flight_service};
use quidditch_index::Indices;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};

async fn serve(indices: Arc<Indices>) -> Result<Channel> {
    let engine = Engine::new(indices, EngineConfig::default())?;
    let service = flight_service(FlightConfig {
        engine,
        auth: None,
        hello: quidditch_cluster::protocol::Hello {
            node_id: "test".into(),
            roles: vec![],
            http: String::new(),
        },
    })?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect().await?)
}

fn one(value: i64) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, true)]));
    Ok(RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![value]))],
    )?)
}

async fn values(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Result<Vec<i64>> {
    let ticket = info.endpoint[0].ticket.clone().context("no ticket")?;
    let batches: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .context("not Int64")?;
        out.extend((0..col.len()).map(|i| col.value(i)));
    }
    Ok(out)
}

#[tokio::test]
async fn a_ticket_keeps_the_values_bound_when_it_was_made() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let indices = Arc::new(Indices::open(dir.path())?);
    let mut client = FlightSqlServiceClient::new(serve(indices).await?);
    let mut statement = client
        .prepare("SELECT CAST(? AS BIGINT) * 2 AS x".to_string(), None)
        .await?;
    let params = statement.parameter_schema()?;
    assert_eq!(params.fields().len(), 1);

    statement.set_parameters(one(21)?)?;
    let first = statement.execute().await?;
    statement.set_parameters(one(50)?)?;
    let second = statement.execute().await?;
    // Redeemed in the other order: each returns what it was bound with.
    assert_eq!(values(&mut client, second).await?, [100]);
    assert_eq!(values(&mut client, first.clone()).await?, [42]);
    // An execution ticket is redeemed once.
    let again = values(&mut client, first).await;
    assert!(again.is_err_and(|e| e.to_string().contains("unknown prepared statement handle")));

    statement.close().await?;
    Ok(())
}
