//! Query results as Flight data: the schema announced in `FlightInfo` and
//! the schema of the `DoGet` stream are the same [`flight_schema`], and
//! batches stream from DataFusion one at a time.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::Status;

use crate::error::df_status;

/// A stream of Flight data, as `DoGet` answers.
pub type FlightDataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The schema clients see for a result: dictionary-encoded columns (keyword
/// fields) are sent as their value type, which every Flight client reads.
pub fn flight_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type(value.as_ref().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch in the client schema: dictionary columns decoded, fields
/// labelled as the schema says.
pub fn to_flight_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Status> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type()).map_err(|e| Status::internal(format!("column [{}]: {e}", f.name())))
            }
        })
        .collect::<Result<Vec<ArrayRef>, Status>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
        .map_err(|e| Status::internal(format!("result does not fit its schema: {e}")))
}

/// Encodes a query's result stream for `DoGet`, announcing `schema` first
/// even when no row follows.
pub fn encode_stream(schema: SchemaRef, stream: SendableRecordBatchStream) -> FlightDataStream {
    let target = Arc::clone(&schema);
    let batches = stream.map(move |r| {
        r.map_err(df_status)
            .and_then(|b| to_flight_batch(&b, &target))
            .map_err(|s| FlightError::Tonic(Box::new(s)))
    });
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from),
    )
}

/// The `FlightInfo` of a result: its schema, and one endpoint whose ticket
/// runs it on this node.
pub fn flight_info(
    schema: &Schema,
    ticket: Ticket,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor))
}

/// Encodes batches built in memory (catalog answers).
pub fn encode_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> FlightDataStream {
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .map_err(Status::from),
    )
}
