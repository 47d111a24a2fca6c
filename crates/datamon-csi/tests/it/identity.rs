use datamon_csi::csi;
use tonic::Code;

use crate::harness::{Fixture, InProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_reports_the_plugin_and_probes_the_store() {
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let info = c
        .identity
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, datamon_csi::DRIVER_NAME);
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = c
        .identity
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.capabilities.len(), 1, "the controller service");

    let probe = c
        .identity
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    fx.store_down();
    let e = c.identity.probe(csi::ProbeRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&fx.store_url), "{}", e.message());
    fx.store_up();
    c.identity.probe(csi::ProbeRequest {}).await.unwrap();

    let n = c
        .node
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.node_id, "node-1");
    let nc = c
        .node
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nc.capabilities.len(), 2, "volume stats and condition");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_driver_started_while_the_store_is_unreachable_probes_unhealthy_then_recovers() {
    let fx = Fixture::new().await;
    fx.store_down();
    let mut opts = fx.options("state");
    opts.controller = false;
    let (d, mut c) = InProcess::start(opts).await;
    let caps = c
        .identity
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(caps.capabilities.is_empty(), "node only: no controller");
    let e = c.identity.probe(csi::ProbeRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // The controller service is not served.
    let e = c
        .controller
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    fx.store_up();
    c.identity.probe(csi::ProbeRequest {}).await.unwrap();
    d.stop().await;
}
