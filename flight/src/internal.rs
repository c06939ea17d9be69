//! The node side of the internal calls between nodes
//! ([`quidditch_cluster::protocol`]): metadata, routed writes, realtime
//! gets, refreshes and liveness, each a Flight action.

use std::sync::Arc;

use quidditch_cluster::client::Answer;
use quidditch_cluster::protocol::{Call, Hello, ShardSegments, ShardStats, WireDoc};
use quidditch_index::index::Index;
use quidditch_index::indices::apply_refresh;
use quidditch_index::peers::{WireError, WireItem};
use quidditch_index::{Error, Indices, Result};
use serde_json::{Value, json};

/// Runs an encoded tantivy leaf over the one shard of this node it names
/// and streams its batches, dictionaries and all.
pub(crate) fn scan(
    engine: &quidditch_executor::Engine,
    leaf: &[u8],
) -> Result<crate::stream::FlightDataStream, tonic::Status> {
    use futures::{StreamExt, TryStreamExt};
    let plan =
        quidditch_index::codec::decode_leaf(leaf, engine.indices()).map_err(crate::error::df_status)?;
    let ctx = engine
        .session()
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let stream = plan.execute(0, ctx.task_ctx()).map_err(crate::error::df_status)?;
    let batches = stream.map(|r| r.map_err(|e| arrow_flight::error::FlightError::ExternalError(Box::new(e))));
    Ok(arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_schema(plan.schema())
        .with_dictionary_handling(arrow_flight::encode::DictionaryHandling::Resend)
        .build(batches)
        .map_err(tonic::Status::from)
        .boxed())
}

/// Answers one internal call; failures are answered too, as the error.
pub(crate) async fn answer(indices: &Arc<Indices>, hello: &Hello, body: &[u8]) -> Vec<u8> {
    let answer = match serde_json::from_slice::<Call>(body) {
        Ok(call) => match run(Arc::clone(indices), hello, call).await {
            Ok(value) => Answer::Ok(value),
            Err(err) => Answer::Error(WireError::from(&err)),
        },
        Err(err) => Answer::Error(WireError::from(&Error::illegal_argument(format!(
            "malformed internal call: {err}"
        )))),
    };
    serde_json::to_vec(&answer).unwrap_or_default()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("internal call failed: {e}")))?
}

fn to_value(v: impl serde::Serialize) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::Internal(e.to_string()))
}

async fn run(indices: Arc<Indices>, hello: &Hello, call: Call) -> Result<Value, Error> {
    match call {
        Call::Ping => to_value(hello),
        Call::ListIndices => to_value(indices.list().iter().map(|i| i.meta()).collect::<Vec<_>>()),
        Call::InstallIndex { meta } => {
            blocking(move || indices.install(meta).map(drop)).await?;
            Ok(Value::Null)
        }
        Call::RemoveIndex { name, uuid } => {
            blocking(move || indices.remove_incarnation(&name, &uuid)).await?;
            Ok(Value::Null)
        }
        Call::PutMapping { name, uuid, mapping } => {
            let index = current(&indices, &name, Some(&uuid)).await?;
            blocking(move || index.receive_mapping(mapping)).await?;
            Ok(Value::Null)
        }
        Call::PutAliases { meta } => {
            let index = current(&indices, &meta.name, Some(&meta.uuid)).await?;
            blocking(move || index.receive_allocation(&meta)).await?;
            Ok(Value::Null)
        }
        Call::Bulk {
            index,
            uuid,
            writes,
            refresh,
        } => {
            let index = current(&indices, &index, Some(&uuid)).await?;
            let target = Arc::clone(&index);
            let batch = blocking(move || target.write(writes, refresh)).await?;
            apply_refresh(refresh, vec![(index, batch.touched)]).await?;
            to_value(batch.items.iter().map(WireItem::from_item).collect::<Vec<_>>())
        }
        Call::Recover {
            index,
            uuid,
            shard,
            target,
        } => {
            let index = current(&indices, &index, Some(&uuid)).await?;
            blocking(move || index.recover_to(shard, &target)).await?;
            Ok(Value::Null)
        }
        Call::CopyStart { index, uuid, shard } => {
            let index = current(&indices, &index, Some(&uuid)).await?;
            blocking(move || index.start_copy(shard)).await?;
            Ok(Value::Null)
        }
        Call::CopyChunk {
            index,
            uuid,
            shard,
            file,
            offset,
            data,
        } => {
            use base64::Engine as _;
            let index = current(&indices, &index, Some(&uuid)).await?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| Error::illegal_argument(format!("bad shard copy chunk: {e}")))?;
            blocking(move || index.receive_copy_chunk(shard, &file, offset, &data)).await?;
            Ok(Value::Null)
        }
        Call::CopyFinish { index, uuid, shard } => {
            let index = current(&indices, &index, Some(&uuid)).await?;
            blocking(move || index.install_copy(shard)).await?;
            Ok(Value::Null)
        }
        Call::Get { index, ids } => {
            let index = current(&indices, &index, None).await?;
            let docs = blocking(move || Ok(index.get_many(&ids))).await?;
            to_value(
                docs.into_iter()
                    .map(|doc| {
                        doc.map(|doc| doc.map(WireDoc::from))
                            .map_err(|e| WireError::from(&e))
                    })
                    .collect::<Vec<_>>(),
            )
        }
        Call::Refresh { index } => {
            let index = current(&indices, &index, None).await?;
            blocking(move || index.refresh()).await?;
            Ok(Value::Null)
        }
        Call::ForceMerge { index, how, flush } => {
            let index = current(&indices, &index, None).await?;
            blocking(move || index.force_merge(how, flush)).await?;
            Ok(Value::Null)
        }
        Call::Segments => {
            let list = indices.list();
            let out = blocking(move || {
                let mut out = Vec::new();
                for index in list {
                    for shard in index.shards() {
                        out.push(ShardSegments {
                            index: index.name(),
                            shard: shard.ordinal(),
                            segments: shard.segments()?,
                            activity: shard.activity().read(),
                        });
                    }
                }
                Ok::<_, quidditch_index::Error>(out)
            })
            .await?;
            Ok(json!(out))
        }
        Call::ShardStats => {
            let mut out = Vec::new();
            for index in indices.list() {
                for shard in index.shards() {
                    out.push(ShardStats {
                        index: index.name(),
                        shard: shard.ordinal(),
                        docs: shard.num_docs(),
                    });
                }
            }
            Ok(json!(out))
        }
        Call::TermStats { index, shards, query } => {
            let index = current(&indices, &index, None).await?;
            to_value(blocking(move || index.local_term_stats(&query, Some(&shards))).await?)
        }
        Call::Allocate {
            index,
            shards,
            replicas,
        } => {
            let peers = indices
                .peers()
                .cloned()
                .ok_or_else(|| Error::illegal_argument("this node is not part of a cluster"))?;
            to_value(blocking(move || peers.allocate(&index, shards, replicas)).await?)
        }
        Call::Replicate {
            index,
            uuid,
            shard,
            primary,
            ops,
            refresh,
        } => {
            let index = current(&indices, &index, Some(&uuid)).await?;
            blocking(move || index.apply_replicated(shard, &primary, ops, refresh)).await?;
            Ok(Value::Null)
        }
    }
}

/// The index `name` (the incarnation `uuid` when given); read from the
/// cluster store, off the async threads, only when this node has not
/// learned it yet ([`Indices::get_current`]).
async fn current(indices: &Arc<Indices>, name: &str, uuid: Option<&str>) -> Result<Arc<Index>> {
    if let Ok(index) = indices.get_incarnation(name, uuid) {
        return Ok(index);
    }
    let indices = Arc::clone(indices);
    let (name, uuid) = (name.to_string(), uuid.map(str::to_string));
    blocking(move || indices.get_current(&name, uuid.as_deref())).await
}
