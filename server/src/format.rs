//! Rendering query results: Elasticsearch SQL's JSON (`columns` + `rows`),
//! CSV and text tables.

use arrow::array::Array;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use serde_json::{Value, json};

/// Elasticsearch SQL's type name for an Arrow type.
pub fn es_type_name(dt: &DataType) -> String {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "keyword".into(),
        DataType::Dictionary(_, inner) => es_type_name(inner),
        DataType::Int64 | DataType::UInt64 | DataType::UInt32 => "long".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int16 | DataType::UInt8 => "short".into(),
        DataType::Int8 => "byte".into(),
        DataType::Float64 | DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => "double".into(),
        DataType::Float32 | DataType::Float16 => "float".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(_, _) => "datetime".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Null => "null".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("array<{}>", es_type_name(f.data_type())),
        other => other.to_string().to_lowercase(),
    }
}

/// One cell as JSON.
pub fn cell(array: &dyn Array, row: usize) -> anyhow::Result<Value> {
    Ok(scalar_json(&ScalarValue::try_from_array(array, row)?))
}

fn scalar_json(v: &ScalarValue) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => json!(b),
        ScalarValue::Int8(Some(n)) => json!(n),
        ScalarValue::Int16(Some(n)) => json!(n),
        ScalarValue::Int32(Some(n)) => json!(n),
        ScalarValue::Int64(Some(n)) => json!(n),
        ScalarValue::UInt8(Some(n)) => json!(n),
        ScalarValue::UInt16(Some(n)) => json!(n),
        ScalarValue::UInt32(Some(n)) => json!(n),
        ScalarValue::UInt64(Some(n)) => json!(n),
        ScalarValue::Float32(Some(f)) => json!(f),
        ScalarValue::Float64(Some(f)) => json!(f),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            json!(s)
        }
        ScalarValue::Dictionary(_, inner) => scalar_json(inner),
        ScalarValue::TimestampMillisecond(Some(ms), _) => json!(iso_millis(*ms)),
        ScalarValue::TimestampSecond(Some(s), _) => json!(iso_millis(s * 1000)),
        ScalarValue::TimestampMicrosecond(Some(us), _) => json!(iso_millis(us / 1000)),
        ScalarValue::TimestampNanosecond(Some(ns), _) => json!(iso_millis(ns / 1_000_000)),
        ScalarValue::List(list) => {
            let values = list.value(0);
            Value::Array(
                (0..values.len())
                    .map(|i| {
                        ScalarValue::try_from_array(&values, i)
                            .map(|s| scalar_json(&s))
                            .unwrap_or(Value::Null)
                    })
                    .collect(),
            )
        }
        ScalarValue::Decimal128(..) | ScalarValue::Decimal256(..) => {
            let s = v.to_string();
            s.parse::<f64>().map_or(json!(s), |f| json!(f))
        }
        other => json!(other.to_string()),
    }
}

/// Epoch milliseconds as ISO-8601 UTC with milliseconds.
pub fn iso_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Elasticsearch SQL's JSON response.
pub fn to_es_sql_json(schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<Value> {
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": es_type_name(f.data_type())}))
        .collect();
    let mut rows = Vec::new();
    for batch in batches {
        for r in 0..batch.num_rows() {
            let row = batch
                .columns()
                .iter()
                .map(|c| cell(c.as_ref(), r))
                .collect::<anyhow::Result<Vec<_>>>()?;
            rows.push(Value::Array(row));
        }
    }
    Ok(json!({"columns": columns, "rows": rows}))
}

/// CSV with a header line.
pub fn to_csv(schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(schema.fields().iter().map(|f| f.name().as_str()))?;
    for batch in batches {
        for r in 0..batch.num_rows() {
            let row = batch
                .columns()
                .iter()
                .map(|c| {
                    cell(c.as_ref(), r).map(|v| match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            w.write_record(&row)?;
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// A text table.
pub fn to_text(batches: &[RecordBatch]) -> anyhow::Result<String> {
    Ok(format!(
        "{}\n",
        arrow::util::pretty::pretty_format_batches(batches)?
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn renders_es_sql_json_and_csv() -> anyhow::Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(TimestampMillisecondArray::from(vec![Some(0), None])),
            ],
        )?;
        let json = to_es_sql_json(&schema, std::slice::from_ref(&batch))?;
        assert_eq!(
            json,
            json!({"columns": [{"name": "name", "type": "keyword"}, {"name": "n", "type": "long"}, {"name": "ts", "type": "datetime"}],
                   "rows": [["a,b", 1, "1970-01-01T00:00:00.000Z"], [null, 2, null]]})
        );
        let csv = to_csv(&schema, &[batch])?;
        assert_eq!(csv, "name,n,ts\n\"a,b\",1,1970-01-01T00:00:00.000Z\n,2,\n");
        Ok(())
    }
}
