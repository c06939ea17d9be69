//! `DoPut` of Arrow record batches into an index: rows become documents
//! written through the index's durable write path (translog fsync before
//! the put is acknowledged), and a missing index is created with a mapping
//! derived from the Arrow schema.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use arrow::json::ArrayWriter;
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::{Stream, TryStreamExt};
use quidditch_index::index::DocWrite;
use quidditch_index::{Index, Indices, RefreshPolicy};
use serde_json::{Map, Value, json};
use tonic::Status;

use crate::error::{index_status, join_status};

/// Rows written per index write (one translog fsync per shard each).
const ROWS_PER_WRITE: usize = 4096;

/// The column that carries document ids, when present.
pub const ID_COLUMN: &str = "_id";

/// What a put did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PutSummary {
    /// Rows received.
    pub rows: u64,
    /// Documents written (created or replaced).
    pub written: u64,
    /// The first rejected row's error and how many were rejected.
    pub rejected: Option<(u64, String)>,
    /// Whether the put created the index.
    pub created_index: bool,
}

/// The Elasticsearch mapping of an Arrow type, or `None` for a column that
/// holds nothing indexable (the null type).
fn field_mapping(name: &str, ty: &DataType) -> Result<Option<Value>, Status> {
    let es = match ty {
        DataType::Null => return Ok(None),
        DataType::Int8 => "byte",
        DataType::Int16 | DataType::UInt8 => "short",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "long",
        DataType::Float16 | DataType::Float32 => "float",
        // Exact decimals stay exact: whole units of their scale.
        DataType::Decimal32(_, scale)
        | DataType::Decimal64(_, scale)
        | DataType::Decimal128(_, scale)
        | DataType::Decimal256(_, scale)
            if (0..=18).contains(scale) =>
        {
            return Ok(Some(
                json!({"type": "scaled_float", "scaling_factor": 10f64.powi(i32::from(*scale))}),
            ));
        }
        DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..) => "double",
        DataType::Boolean => "boolean",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "keyword",
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => "date",
        DataType::Dictionary(_, value) => return field_mapping(name, value),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => return field_mapping(name, f.data_type()),
        DataType::Struct(fields) => {
            let mut props = Map::new();
            for f in fields {
                if let Some(m) = field_mapping(&format!("{name}.{}", f.name()), f.data_type())? {
                    props.insert(f.name().clone(), m);
                }
            }
            return Ok(Some(json!({"properties": props})));
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "column [{name}] has type [{other}], which cannot be indexed"
            )));
        }
    };
    Ok(Some(json!({"type": es})))
}

/// Columns a put drops: what query results carry besides fields (`_index`,
/// `_score`, `_source`, `_version`, `_seq_no`, so that a result can be put
/// back) and pandas' index columns.
fn dropped(name: &str) -> bool {
    matches!(name, "_index" | "_score" | "_source" | "_version" | "_seq_no")
        || (name.starts_with("__index_level_") && name.ends_with("__"))
}

/// The positions of the columns that become document fields; other
/// underscore names are refused, as Elasticsearch refuses such fields.
fn field_columns(schema: &Schema) -> Result<Vec<usize>, Status> {
    let mut keep = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let name = f.name();
        if name == ID_COLUMN || dropped(name) {
            continue;
        }
        if name.starts_with('_') {
            return Err(Status::invalid_argument(format!(
                "column [{name}] starts with an underscore, which is reserved for metadata fields: rename it"
            )));
        }
        keep.push(i);
    }
    Ok(keep)
}

/// The `mappings` of an index for rows of this schema.
pub fn mapping_for(schema: &Schema) -> Result<Value, Status> {
    let mut props = Map::new();
    for i in field_columns(schema)? {
        let f = schema.field(i);
        if let Some(m) = field_mapping(f.name(), f.data_type())? {
            props.insert(f.name().clone(), m);
        }
    }
    Ok(json!({"properties": props}))
}

/// Ids from the `_id` column (as strings), if the batch has one.
fn ids(batch: &RecordBatch) -> Result<Option<Vec<Option<String>>>, Status> {
    let Some(column) = batch.column_by_name(ID_COLUMN) else {
        return Ok(None);
    };
    let strings = cast(column, &DataType::Utf8)
        .map_err(|e| Status::invalid_argument(format!("column [{ID_COLUMN}] is not usable as ids: {e}")))?;
    let strings = strings
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Status::internal("cast to strings gave another type"))?;
    Ok(Some(
        (0..strings.len())
            .map(|i| strings.is_valid(i).then(|| strings.value(i).to_string()))
            .collect(),
    ))
}

/// The documents of a batch, as `index` writes.
fn documents(batch: &RecordBatch) -> Result<Vec<DocWrite>, Status> {
    let ids = ids(batch)?;
    let fields = batch
        .project(&field_columns(batch.schema_ref())?)
        .map_err(|e| Status::internal(format!("projecting fields: {e}")))?;
    let mut writer = ArrayWriter::new(Vec::new());
    writer
        .write(&fields)
        .map_err(|e| Status::invalid_argument(format!("cannot convert rows to documents: {e}")))?;
    writer
        .finish()
        .map_err(|e| Status::invalid_argument(format!("cannot convert rows to documents: {e}")))?;
    let json = writer.into_inner();
    let sources: Vec<Value> = if json.is_empty() {
        vec![Value::Object(Map::new()); batch.num_rows()]
    } else {
        serde_json::from_slice(&json).map_err(|e| Status::internal(format!("row JSON: {e}")))?
    };
    Ok(sources
        .into_iter()
        .enumerate()
        .map(|(i, source)| DocWrite::Index {
            id: ids.as_ref().and_then(|ids| ids[i].clone()),
            source: source.to_string().into(),
            create: false,
            condition: None,
        })
        .collect())
}

/// The index to write into: the index of that name, or the write index
/// of the alias of that name; created from the schema when neither exists.
fn target(indices: &Indices, name: &str, schema: &Schema) -> Result<(Arc<Index>, bool), Status> {
    match indices.write_index(name) {
        Ok(index) => Ok((index, false)),
        Err(quidditch_index::Error::IndexNotFound(_)) => {
            let body = json!({"mappings": mapping_for(schema)?});
            match indices.create(name, Some(&body)) {
                Ok(index) => Ok((index, true)),
                // Created by a concurrent put.
                Err(quidditch_index::Error::IndexExists(_)) => {
                    Ok((indices.write_index(name).map_err(index_status)?, false))
                }
                Err(e) => Err(index_status(e)),
            }
        }
        Err(e) => Err(index_status(e)),
    }
}

fn write_batch(index: &Index, batch: &RecordBatch, summary: &mut PutSummary) -> Result<(), Status> {
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = ROWS_PER_WRITE.min(batch.num_rows() - offset);
        let writes = documents(&batch.slice(offset, len))?;
        let result = index.write(writes, RefreshPolicy::None).map_err(index_status)?;
        for (_, item) in result.items {
            match item {
                Ok(_) => summary.written += 1,
                Err(e) => match &mut summary.rejected {
                    Some((n, _)) => *n += 1,
                    None => summary.rejected = Some((1, e.to_string())),
                },
            }
        }
        summary.rows += len as u64;
        offset += len;
    }
    Ok(())
}

/// Writes every batch of a `DoPut` stream into `index_name`, then refreshes
/// the index so that the rows are searchable when the put returns.
pub async fn put(
    indices: Arc<Indices>,
    index_name: &str,
    data: impl Stream<Item = Result<FlightData, FlightError>> + Send + Unpin + 'static,
) -> Result<PutSummary, Status> {
    let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
    let mut summary = PutSummary::default();
    let mut index: Option<Arc<Index>> = None;
    while let Some(batch) = batches.try_next().await.map_err(Status::from)? {
        let target_index = match &index {
            Some(i) => Arc::clone(i),
            None => {
                let (i, created) = {
                    let indices = Arc::clone(&indices);
                    let name = index_name.to_string();
                    let schema = batch.schema();
                    tokio::task::spawn_blocking(move || target(&indices, &name, &schema))
                        .await
                        .map_err(join_status)??
                };
                summary.created_index = created;
                index = Some(Arc::clone(&i));
                i
            }
        };
        summary = tokio::task::spawn_blocking(move || {
            let mut summary = summary;
            write_batch(&target_index, &batch, &mut summary).map(|()| summary)
        })
        .await
        .map_err(join_status)??;
    }
    if index.is_none()
        && let Some(schema) = batches.schema().cloned()
    {
        let indices = Arc::clone(&indices);
        let name = index_name.to_string();
        let (i, created) = tokio::task::spawn_blocking(move || target(&indices, &name, &schema))
            .await
            .map_err(join_status)??;
        summary.created_index = created;
        index = Some(i);
    }
    if let Some(index) = index {
        tokio::task::spawn_blocking(move || index.refresh_everywhere())
            .await
            .map_err(join_status)?
            .map_err(index_status)?;
    }
    Ok(summary)
}

/// Sends `batches` into index `index` of the node whose Flight address is
/// `addr` (`host:port`) with `DoPut`, as a client does; returns the number
/// of documents the node wrote.
pub async fn send(addr: &str, index: &str, batches: Vec<RecordBatch>) -> Result<u64, FlightError> {
    let external = |e: Box<dyn std::error::Error + Send + Sync>| FlightError::ExternalError(e);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| external(e.into()))?
        .connect()
        .await
        .map_err(|e| external(e.into()))?;
    let mut client = arrow_flight::FlightClient::new(channel);
    let encoded = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_path(vec![
            index.to_string(),
        ])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let results: Vec<_> = client.do_put(encoded).await?.try_collect().await?;
    let summary: Value = results
        .first()
        .and_then(|r| serde_json::from_slice(&r.app_metadata).ok())
        .ok_or_else(|| FlightError::protocol("the put answered no summary"))?;
    summary["written"]
        .as_u64()
        .ok_or_else(|| FlightError::protocol(format!("the put answered {summary}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};

    #[test]
    fn mapping_follows_arrow_types() -> Result<(), Status> {
        let schema = Schema::new(vec![
            Field::new(ID_COLUMN, DataType::Utf8, false),
            Field::new("n", DataType::Int32, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8View, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new_list("tags", Field::new("item", DataType::Utf8, true), true),
            Field::new("nothing", DataType::Null, true),
        ]);
        assert_eq!(
            mapping_for(&schema)?,
            json!({"properties": {
                "n": {"type": "integer"},
                "x": {"type": "double"},
                "s": {"type": "keyword"},
                "t": {"type": "date"},
                "tags": {"type": "keyword"},
            }})
        );
        let result = Schema::new(vec![
            Field::new("_index", DataType::Utf8, false),
            Field::new("_score", DataType::Float32, true),
            Field::new("__index_level_0__", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ]);
        assert_eq!(
            mapping_for(&result)?,
            json!({"properties": {"n": {"type": "long"}}})
        );
        let reserved = Schema::new(vec![Field::new("_routing", DataType::Utf8, true)]);
        assert!(
            mapping_for(&reserved)
                .is_err_and(|e| e.message().contains("[_routing] starts with an underscore"))
        );
        let binary = Schema::new(vec![Field::new("b", DataType::Binary, true)]);
        let err = mapping_for(&binary).err();
        assert!(err.is_some_and(|e| e.message() == "column [b] has type [Binary], which cannot be indexed"));
        Ok(())
    }
}
