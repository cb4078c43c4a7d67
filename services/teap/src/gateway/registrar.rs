//! The registrar calls the gateway makes, behind a trait so the gateway is tested against a
//! fake and runs against gRPC.

use std::future::Future;
use std::pin::Pin;

use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use tonic::Status;
use tonic::transport::Channel;

pub type RegistrarFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send + 'a>>;

/// `ragw.registrar.v1.EnrollmentService` as the TEAP gateway uses it.
pub trait Registrar: Send + Sync + 'static {
    fn get_assignment(
        &self,
        request: pb::GetAssignmentRequest,
    ) -> RegistrarFuture<'_, pb::Assignment>;
    fn enroll(&self, request: pb::EnrollRequest) -> RegistrarFuture<'_, pb::EnrollResponse>;
    fn wait_enrollment(
        &self,
        request: pb::WaitEnrollmentRequest,
    ) -> RegistrarFuture<'_, pb::Enrollment>;
    fn record_refusal(&self, request: pb::RecordRefusalRequest) -> RegistrarFuture<'_, ()>;
    fn record_access(&self, request: pb::RecordAccessRequest) -> RegistrarFuture<'_, ()>;
}

/// The registrar over gRPC (mutual TLS, role gateway).
#[derive(Clone)]
pub struct GrpcRegistrar {
    channel: Channel,
}

impl GrpcRegistrar {
    pub fn new(channel: Channel) -> GrpcRegistrar {
        GrpcRegistrar { channel }
    }

    fn client(&self) -> EnrollmentServiceClient<Channel> {
        EnrollmentServiceClient::new(self.channel.clone())
    }
}

impl Registrar for GrpcRegistrar {
    fn get_assignment(
        &self,
        request: pb::GetAssignmentRequest,
    ) -> RegistrarFuture<'_, pb::Assignment> {
        let mut client = self.client();
        Box::pin(async move { Ok(client.get_assignment(request).await?.into_inner()) })
    }

    fn enroll(&self, request: pb::EnrollRequest) -> RegistrarFuture<'_, pb::EnrollResponse> {
        let mut client = self.client();
        Box::pin(async move { Ok(client.enroll(request).await?.into_inner()) })
    }

    fn wait_enrollment(
        &self,
        request: pb::WaitEnrollmentRequest,
    ) -> RegistrarFuture<'_, pb::Enrollment> {
        let mut client = self.client();
        Box::pin(async move { Ok(client.wait_enrollment(request).await?.into_inner()) })
    }

    fn record_refusal(&self, request: pb::RecordRefusalRequest) -> RegistrarFuture<'_, ()> {
        let mut client = self.client();
        Box::pin(async move {
            client.record_refusal(request).await?;
            Ok(())
        })
    }

    fn record_access(&self, request: pb::RecordAccessRequest) -> RegistrarFuture<'_, ()> {
        let mut client = self.client();
        Box::pin(async move {
            client.record_access(request).await?;
            Ok(())
        })
    }
}
