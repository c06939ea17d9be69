//! The Flight service of a node. Plain Flight calls (JSON tickets and
//! commands, path descriptors, `ListFlights`) are answered here; protobuf
//! Flight SQL commands go to [`FlightSql`]. Every call but the handshake is
//! authenticated when the node has credentials.

use std::sync::Arc;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use tonic::{Request, Response, Status, Streaming};

use crate::plain::{self, MAX_TICKET, PlainRequest};
use crate::sql::FlightSql;
use crate::{AuthGate, FlightConfig};

type Sql = FlightSql;

/// Routes and authenticates the calls of a node's Flight address.
#[derive(Debug)]
pub struct QuidditchFlight {
    sql: Arc<FlightSql>,
    auth: Option<Arc<AuthGate>>,
    hello: quidditch_cluster::protocol::Hello,
}

/// Whether bytes hold a JSON object (a plain ticket or command) rather
/// than a protobuf Flight SQL command.
fn is_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn is_plain(descriptor: &FlightDescriptor) -> bool {
    descriptor.r#type == DescriptorType::Path as i32 || is_json(&descriptor.cmd)
}

impl QuidditchFlight {
    /// The service of a node.
    pub fn new(config: FlightConfig) -> Result<QuidditchFlight, Status> {
        Ok(QuidditchFlight {
            sql: Arc::new(FlightSql::new(config.engine, config.auth.clone())?),
            auth: config.auth,
            hello: config.hello,
        })
    }

    async fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        auth.check(header)
            .await
            .map(|_| ())
            .map_err(Status::unauthenticated)
    }
}

#[tonic::async_trait]
impl FlightService for QuidditchFlight {
    type HandshakeStream = <Sql as FlightService>::HandshakeStream;
    type ListFlightsStream = <Sql as FlightService>::ListFlightsStream;
    type DoGetStream = <Sql as FlightService>::DoGetStream;
    type DoPutStream = <Sql as FlightService>::DoPutStream;
    type DoExchangeStream = <Sql as FlightService>::DoExchangeStream;
    type DoActionStream = <Sql as FlightService>::DoActionStream;
    type ListActionsStream = <Sql as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.sql.handshake(request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.authorize(&request).await?;
        let infos = plain::list(self.sql.engine()).await?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            infos.into_iter().map(Ok),
        ))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request).await?;
        if is_plain(request.get_ref()) {
            let descriptor = request.into_inner();
            let plain_request = PlainRequest::from_descriptor(&descriptor)?;
            let info = plain::flight_info(self.sql.engine(), &plain_request, descriptor).await?;
            return Ok(Response::new(info));
        }
        self.sql.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.authorize(&request).await?;
        self.sql.poll_flight_info(request).await
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        self.authorize(&request).await?;
        if !is_plain(request.get_ref()) {
            return Err(Status::unimplemented(
                "GetSchema answers plain descriptors; Flight SQL clients read the schema from GetFlightInfo",
            ));
        }
        let descriptor = request.into_inner();
        let plain_request = PlainRequest::from_descriptor(&descriptor)?;
        let info = plain::flight_info(self.sql.engine(), &plain_request, descriptor).await?;
        Ok(Response::new(SchemaResult { schema: info.schema }))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        self.authorize(&request).await?;
        let ticket = &request.get_ref().ticket;
        if let Some(leaf) = ticket.strip_prefix(quidditch_cluster::protocol::SCAN_TICKET) {
            return Ok(Response::new(crate::internal::scan(self.sql.engine(), leaf)?));
        }
        if ticket.len() > MAX_TICKET || is_json(ticket) {
            let plain_request = PlainRequest::parse(ticket)?;
            return Ok(Response::new(
                plain::execute(self.sql.engine(), &plain_request).await?,
            ));
        }
        self.sql.do_get(request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.authorize(&request).await?;
        self.sql.do_put(request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.authorize(&request).await?;
        self.sql.do_exchange(request).await
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        self.authorize(&request).await?;
        if request
            .get_ref()
            .r#type
            .starts_with(quidditch_cluster::protocol::PREFIX)
        {
            let body =
                crate::internal::answer(self.sql.engine().indices(), &self.hello, &request.get_ref().body)
                    .await;
            let result = arrow_flight::Result { body: body.into() };
            return Ok(Response::new(Box::pin(futures::stream::once(async move {
                Ok(result)
            }))));
        }
        self.sql.do_action(request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.authorize(&request).await?;
        self.sql.list_actions(request).await
    }
}
