//! Calling other nodes: one lazily connected channel per node, a connect
//! timeout and a per-call deadline, and errors that name the node.

use std::collections::HashMap;
use std::time::Duration;

use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::StreamExt;
use parking_lot::Mutex;
use quidditch_index::Error;
use quidditch_index::peers::WireError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::membership::NodeInfo;
use crate::protocol::Call;

/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one internal call may take (a large routed bulk included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a ping, or a listing of metadata or shard statistics, may take:
/// a node that holds its connection open without answering is down.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle connection to a node is checked.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a node may take to answer a keepalive before the connection
/// (and every call on it) fails.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The envelope of every internal answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The call's result.
    Ok(serde_json::Value),
    /// The call failed on the node.
    Error(WireError),
}

/// Calls other nodes.
#[derive(Debug, Default)]
pub struct Client {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Client {
    fn channel(&self, node: &NodeInfo) -> Result<Channel, Error> {
        let url = node.url();
        if let Some(channel) = self.channels.lock().get(&url) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|e| {
                Error::unavailable(format!(
                    "node [{}] has a bad address [{}]: {e}",
                    node.id, node.flight
                ))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        self.channels.lock().insert(url, channel.clone());
        Ok(channel)
    }

    /// Runs an encoded tantivy leaf over one shard on `node`: its batches.
    pub async fn scan(
        &self,
        node: &NodeInfo,
        leaf: Vec<u8>,
    ) -> Result<
        futures::stream::BoxStream<'static, Result<datafusion::arrow::record_batch::RecordBatch, Error>>,
        Error,
    > {
        let mut ticket = crate::protocol::SCAN_TICKET.to_vec();
        ticket.extend(leaf);
        let mut client = arrow_flight::FlightClient::new(self.channel(node)?);
        let failed = {
            let (id, addr) = (node.id.clone(), node.flight.clone());
            move |e: arrow_flight::error::FlightError| {
                Error::unavailable(format!("reading a shard on node [{id}] at {addr} failed: {e}"))
            }
        };
        let stream = client
            .do_get(arrow_flight::Ticket {
                ticket: ticket.into(),
            })
            .await
            .map_err(failed.clone())?;
        Ok(futures::StreamExt::boxed(futures::TryStreamExt::map_err(
            stream, failed,
        )))
    }

    /// Makes `call` on `node` and decodes its answer.
    pub async fn call<T: DeserializeOwned>(&self, node: &NodeInfo, call: &Call) -> Result<T, Error> {
        let value = self.call_value(node, call).await?;
        serde_json::from_value(value).map_err(|e| {
            Error::unavailable(format!(
                "node [{}] at {} answered {} with something else than expected: {e}",
                node.id,
                node.flight,
                call.action_type()
            ))
        })
    }

    async fn call_value(&self, node: &NodeInfo, call: &Call) -> Result<serde_json::Value, Error> {
        let body = serde_json::to_vec(call).map_err(|e| Error::Internal(e.to_string()))?;
        let mut client = FlightServiceClient::new(self.channel(node)?)
            .max_decoding_message_size(crate::protocol::MAX_MESSAGE)
            .max_encoding_message_size(crate::protocol::MAX_MESSAGE);
        let mut action = tonic::Request::new(Action {
            r#type: call.action_type(),
            body: body.into(),
        });
        if matches!(
            call,
            Call::Ping | Call::ListIndices | Call::ShardStats | Call::Segments
        ) {
            action.set_timeout(QUICK_TIMEOUT);
        }
        let failed = |status: tonic::Status| {
            let what = match status.code() {
                tonic::Code::Unimplemented | tonic::Code::Unknown | tonic::Code::Internal => {
                    "is not a Quidditch node or failed"
                }
                tonic::Code::DeadlineExceeded => "did not answer in time",
                _ => "did not answer",
            };
            Error::unavailable(format!(
                "node [{}] at {} {what}: {}",
                node.id,
                node.flight,
                status.message()
            ))
        };
        let mut stream = client.do_action(action).await.map_err(failed)?.into_inner();
        let first = stream.next().await.ok_or_else(|| {
            Error::unavailable(format!(
                "node [{}] at {} gave no answer to {}",
                node.id,
                node.flight,
                call.action_type()
            ))
        })?;
        let result = first.map_err(failed)?;
        let answer: Answer = serde_json::from_slice(&result.body).map_err(|e| {
            Error::unavailable(format!(
                "node [{}] at {} is not a Quidditch node (bad answer: {e})",
                node.id, node.flight
            ))
        })?;
        match answer {
            Answer::Ok(value) => Ok(value),
            Answer::Error(err) => Err(err.into()),
        }
    }
}
