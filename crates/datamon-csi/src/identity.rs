//! The CSI identity service: who the plugin is, what it serves, and whether it is healthy
//! (the store answers).

use tonic::{Request, Response, Status};

use crate::csi::{self, plugin_capability};
use crate::{Driver, DRIVER_NAME};

/// The identity service.
#[derive(Debug, Clone)]
pub struct IdentityService(pub Driver);

#[tonic::async_trait]
impl csi::identity_server::Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: DRIVER_NAME.to_owned(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = Vec::new();
        if self.0.options().controller {
            capabilities.push(csi::PluginCapability {
                r#type: Some(plugin_capability::Type::Service(
                    plugin_capability::Service {
                        r#type: plugin_capability::service::Type::ControllerService as i32,
                    },
                )),
            });
        }
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        let url = &self.0.options().store_url;
        let unhealthy = |why: String| Status::failed_precondition(format!("store {url}: {why}"));
        let check = async {
            let dm = self.0.datamon().await?;
            dm.list_repos()
                .await
                .map_err(|e| crate::status::from_error("listing repos", &e))
        };
        match tokio::time::timeout(self.0.options().probe_timeout, check).await {
            Err(_) => Err(unhealthy("does not answer".into())),
            Ok(Err(e)) => Err(unhealthy(e.message().to_owned())),
            Ok(Ok(_)) => Ok(Response::new(csi::ProbeResponse { ready: Some(true) })),
        }
    }
}
