use datamon_csi::csi;
use datamon_csi::csi::volume_capability::access_mode::Mode as AccessMode;
use tonic::Code;

use crate::harness::{attrs, block_cap, cap, Fixture, InProcess};

fn create(name: &str, params: &[(&str, &str)], mode: AccessMode) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap(mode)],
        parameters: attrs(params),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_resolves_the_label_once_and_is_idempotent() {
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let ro = AccessMode::MultiNodeReaderOnly;
    let params = [
        ("repo", "data"),
        ("label", "prod"),
        ("csi.storage.k8s.io/pvc/name", "claim"),
    ];
    let v = c
        .controller
        .create_volume(create("pvc-1", &params, ro))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let first = fx.first.id.to_string();
    assert!(v.volume_id.contains(&first), "{}", v.volume_id);
    assert_eq!(v.volume_context.get("bundle"), Some(&first));
    assert_eq!(v.volume_context.get("label"), None, "resolved");
    assert_eq!(v.capacity_bytes as u64, fx.first.stats.bytes);

    // The label moves: the same create returns the same volume.
    fx.dm
        .set_label(&fx.repo, &"prod".parse().unwrap(), &fx.second.id, None)
        .await
        .unwrap();
    let again = c
        .controller
        .create_volume(create("pvc-1", &params, ro))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(again.volume_id, v.volume_id);
    // A new volume sees the label's new bundle.
    let other = c
        .controller
        .create_volume(create("pvc-2", &params, ro))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(other.volume_id.contains(&fx.second.id.to_string()));

    // Same name, other parameters: AlreadyExists.
    let e = c
        .controller
        .create_volume(create("pvc-1", &[("repo", "data"), ("branch", "main")], ro))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("pvc-1"), "{}", e.message());

    // Validate.
    let ok = c
        .controller
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: v.volume_id.clone(),
            volume_context: v.volume_context.clone(),
            volume_capabilities: vec![cap(ro)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some(), "{}", ok.message);
    let no = c
        .controller
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: v.volume_id.clone(),
            volume_capabilities: vec![cap(AccessMode::MultiNodeMultiWriter)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(no.confirmed.is_none());
    assert!(no.message.contains("ReadOnlyMany"), "{}", no.message);

    // Delete, twice.
    for _ in 0..2 {
        c.controller
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: v.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Deleted: the name can be created anew, with other parameters.
    c.controller
        .create_volume(create("pvc-1", &[("repo", "data"), ("branch", "main")], ro))
        .await
        .unwrap();
    let caps = c
        .controller
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.capabilities.len(), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_controller_requests_get_the_codes_the_spec_names() {
    let fx = Fixture::new().await;
    let (d, mut c) = InProcess::start(fx.options("state")).await;
    let ro = AccessMode::MultiNodeReaderOnly;
    let cases: Vec<(csi::CreateVolumeRequest, Code, &str)> = vec![
        (
            create("", &[("repo", "data"), ("label", "prod")], ro),
            Code::InvalidArgument,
            "name",
        ),
        (
            csi::CreateVolumeRequest {
                volume_capabilities: vec![],
                ..create("v", &[("repo", "data"), ("label", "prod")], ro)
            },
            Code::InvalidArgument,
            "capabilities",
        ),
        (
            create("v", &[("label", "prod")], ro),
            Code::InvalidArgument,
            "repo",
        ),
        (
            create(
                "v",
                &[("repo", "data"), ("label", "prod"), ("bundle", "x")],
                ro,
            ),
            Code::InvalidArgument,
            "one of",
        ),
        (
            csi::CreateVolumeRequest {
                volume_capabilities: vec![block_cap()],
                ..create("v", &[("repo", "data"), ("label", "prod")], ro)
            },
            Code::InvalidArgument,
            "block",
        ),
        (
            create(
                "v",
                &[("repo", "data"), ("mode", "versioned")],
                AccessMode::MultiNodeMultiWriter,
            ),
            Code::InvalidArgument,
            "one node",
        ),
        (
            create("v", &[("repo", "nope"), ("label", "prod")], ro),
            Code::NotFound,
            "nope",
        ),
        (
            create("v", &[("repo", "data"), ("label", "gone")], ro),
            Code::NotFound,
            "gone",
        ),
        (
            create("v", &[("repo", "data"), ("branch", "gone")], ro),
            Code::NotFound,
            "gone",
        ),
        (
            csi::CreateVolumeRequest {
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: 0,
                    limit_bytes: 10,
                }),
                ..create("v", &[("repo", "data"), ("label", "prod")], ro)
            },
            Code::OutOfRange,
            "limit",
        ),
    ];
    for (req, code, needle) in cases {
        let e = c.controller.create_volume(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(e.message().contains(needle), "{req:?}: {}", e.message());
    }
    let e = c
        .controller
        .delete_volume(csi::DeleteVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .controller
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .controller
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: format!("ro:data:{}:0123456789ab", datamon::BundleId::generate()),
            volume_capabilities: vec![cap(ro)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("data"), "{}", e.message());
    let e = c
        .controller
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: "someone-elses".into(),
            volume_capabilities: vec![cap(ro)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // The store down: Unavailable, so the provisioner retries.
    fx.store_down();
    let (d2, mut c2) = InProcess::start(fx.options("state2")).await;
    let e = c2
        .controller
        .create_volume(create("v", &[("repo", "data"), ("label", "prod")], ro))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    fx.store_up();
    d2.stop().await;
    d.stop().await;
}
