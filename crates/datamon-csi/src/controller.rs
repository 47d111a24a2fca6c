//! The CSI controller service, for dynamic provisioning with the external provisioner.
//!
//! `CreateVolume` takes the StorageClass parameters (see [`crate::volume`]), resolves a label
//! or branch to a bundle id at creation (so the volume is reproducible: it shows that bundle
//! for its whole life) and returns a volume id that records repo and bundle
//! ([`crate::volume::volume_id`]) and a volume context that names the bundle by id. The
//! requested capacity is accepted and the bundle's size reported. A record per volume name in
//! `<state_dir>/controller/` makes a repeated create return the same volume (even after the
//! label moved) and an incompatible one fail with `AlreadyExists`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::csi::volume_capability::access_mode::Mode as AccessMode;
use crate::csi::{self, controller_service_capability as ccap, volume_capability};
use crate::volume::{self, Selector, VolumeSpec};
use crate::Driver;

/// The controller service.
#[derive(Debug, Clone)]
pub struct ControllerService(pub Driver);

/// What was created under one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Created {
    name: String,
    parameters: std::collections::BTreeMap<String, String>,
    volume_id: String,
    capacity: i64,
    context: std::collections::BTreeMap<String, String>,
}

/// Whether `cap` is one this driver serves for a volume of this kind: a filesystem (not a
/// block device), and for versioned volumes one node writing.
///
/// # Errors
/// Why not, in words for the message of the status.
pub fn check_capability(cap: &csi::VolumeCapability, versioned: bool) -> Result<(), String> {
    match &cap.access_type {
        Some(volume_capability::AccessType::Mount(_)) => {}
        Some(volume_capability::AccessType::Block(_)) => {
            return Err("block volumes are not supported: use a filesystem volume".into())
        }
        None => return Err("the volume capability has no access type".into()),
    }
    let mode = cap
        .access_mode
        .as_ref()
        .and_then(|m| AccessMode::try_from(m.mode).ok())
        .unwrap_or(AccessMode::Unknown);
    match mode {
        AccessMode::Unknown => Err("the volume capability has no access mode".into()),
        AccessMode::MultiNodeSingleWriter | AccessMode::MultiNodeMultiWriter if versioned => Err(
            "a versioned volume is written by one node: use ReadWriteOnce or ReadWriteOncePod"
                .into(),
        ),
        AccessMode::MultiNodeSingleWriter | AccessMode::MultiNodeMultiWriter => {
            Err("a read-only volume cannot be written: use ReadOnlyMany".into())
        }
        _ => Ok(()),
    }
}

fn check_capabilities(caps: &[csi::VolumeCapability], versioned: bool) -> Result<(), String> {
    caps.iter().try_for_each(|c| check_capability(c, versioned))
}

impl ControllerService {
    fn dir(&self) -> PathBuf {
        self.0.options().state_dir.join("controller")
    }

    fn record_path(&self, name: &str) -> PathBuf {
        let h = datamon::Hash::of(name.as_bytes()).to_hex();
        self.dir().join(format!("{}.json", &h[..32]))
    }

    fn load(&self, name: &str) -> Result<Option<Created>, Status> {
        let p = self.record_path(name);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Status::internal(format!("damaged record {}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Status::internal(format!("reading {}: {e}", p.display()))),
        }
    }
}

fn without_k8s_keys(m: &HashMap<String, String>) -> std::collections::BTreeMap<String, String> {
    m.iter()
        .filter(|(k, _)| !k.starts_with(volume::K8S_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not supported by the datamon driver"
    )))
}

#[tonic::async_trait]
impl csi::controller_server::Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument(
                "CreateVolume: the volume name is missing",
            ));
        }
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument(format!(
                "CreateVolume {}: no volume capabilities",
                r.name
            )));
        }
        if r.volume_content_source.is_some() {
            return Err(Status::invalid_argument(format!(
                "CreateVolume {}: volumes from snapshots or clones are not supported; select a bundle with the parameters",
                r.name
            )));
        }
        let spec = VolumeSpec::from_attributes(&r.parameters)?;
        let what = format!("repo {}, {}", spec.repo, spec.selector);
        check_capabilities(&r.volume_capabilities, spec.is_versioned()).map_err(|m| {
            Status::invalid_argument(format!("CreateVolume {} ({what}): {m}", r.name))
        })?;
        let parameters = without_k8s_keys(&r.parameters);
        let _serial = self.0.inner.controller.lock().await;
        if let Some(c) = self.load(&r.name)? {
            if c.parameters != parameters {
                return Err(Status::already_exists(format!(
                    "volume {} exists with other parameters ({}); delete it first or choose another name",
                    r.name, c.volume_id
                )));
            }
            return Ok(Response::new(created_response(&c)));
        }
        let dm = self.0.datamon().await?;
        let (bundle, bytes) = match spec.selector.to_library() {
            Some(sel) => {
                let id = dm
                    .resolve(&spec.repo, &sel)
                    .await
                    .map_err(|e| crate::status::from_error(&what, &e))?;
                let b = dm
                    .get_bundle(&spec.repo, &id)
                    .await
                    .map_err(|e| crate::status::from_error(&what, &e))?;
                (Some(id), b.stats.bytes)
            }
            None => {
                dm.get_repo(&spec.repo)
                    .await
                    .map_err(|e| crate::status::from_error(&what, &e))?;
                (None, 0)
            }
        };
        let limit = r.capacity_range.as_ref().map_or(0, |c| c.limit_bytes);
        if !spec.is_versioned() && limit > 0 && (bytes as i64) > limit {
            return Err(Status::out_of_range(format!(
                "{what}: the bundle holds {bytes} bytes, more than the limit of {limit}"
            )));
        }
        // The volume context names the bundle by id: a label that moves later does not change
        // what the volume shows.
        let fixed = VolumeSpec {
            selector: bundle.map_or(Selector::Empty, Selector::Bundle),
            ..spec.clone()
        };
        let c = Created {
            name: r.name.clone(),
            parameters,
            volume_id: volume::volume_id(&spec, bundle.as_ref(), &r.name),
            capacity: bytes as i64,
            context: fixed.to_attributes().into_iter().collect(),
        };
        std::fs::create_dir_all(self.dir())
            .map_err(|e| Status::internal(format!("creating {}: {e}", self.dir().display())))?;
        let b = serde_json::to_vec_pretty(&c).expect("a record always serializes");
        crate::node::write_atomic(&self.record_path(&r.name), &b)?;
        tracing::info!("created volume {} ({what})", c.volume_id);
        Ok(Response::new(created_response(&c)))
    }

    async fn delete_volume(
        &self,
        request: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument(
                "DeleteVolume: the volume id is missing",
            ));
        }
        // Bundles are never deleted by a volume going away: the data is versioned history.
        let _serial = self.0.inner.controller.lock().await;
        if let Ok(rd) = std::fs::read_dir(self.dir()) {
            for e in rd.flatten() {
                let Ok(b) = std::fs::read(e.path()) else {
                    continue;
                };
                if serde_json::from_slice::<Created>(&b).is_ok_and(|c| c.volume_id == r.volume_id) {
                    std::fs::remove_file(e.path()).map_err(|err| {
                        Status::internal(format!("removing {}: {err}", e.path().display()))
                    })?;
                }
            }
        }
        Ok(Response::new(csi::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _request: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        unimplemented("ControllerPublishVolume")
    }

    async fn controller_unpublish_volume(
        &self,
        _request: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        unimplemented("ControllerUnpublishVolume")
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument(
                "ValidateVolumeCapabilities: the volume id is missing",
            ));
        }
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument(format!(
                "ValidateVolumeCapabilities {}: no volume capabilities",
                r.volume_id
            )));
        }
        // A volume of ours (its id says what it is), or a static one (its context does).
        let (spec_repo, bundle, versioned) = match volume::parse_volume_id(&r.volume_id) {
            Some(p) => (p.repo, p.bundle, p.versioned),
            None if r.volume_context.contains_key(volume::REPO) => {
                let s = VolumeSpec::from_attributes(&r.volume_context)?;
                let dm = self.0.datamon().await?;
                let what = format!("repo {}, {}", s.repo, s.selector);
                let id = match s.selector.to_library() {
                    Some(sel) => Some(
                        dm.resolve(&s.repo, &sel)
                            .await
                            .map_err(|e| crate::status::from_error(&what, &e))?,
                    ),
                    None => None,
                };
                (s.repo.clone(), id, s.is_versioned())
            }
            None => {
                return Err(Status::not_found(format!(
                    "volume {} is not a datamon volume (no repo attribute)",
                    r.volume_id
                )))
            }
        };
        let dm = self.0.datamon().await?;
        let what = format!("volume {} (repo {spec_repo})", r.volume_id);
        match &bundle {
            Some(id) => dm.get_bundle(&spec_repo, id).await.map(drop),
            None => dm.get_repo(&spec_repo).await.map(drop),
        }
        .map_err(|e| crate::status::from_error(&what, &e))?;
        let resp = match check_capabilities(&r.volume_capabilities, versioned) {
            Ok(()) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                    mutable_parameters: r.mutable_parameters,
                }),
                message: String::new(),
            },
            Err(m) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: m,
            },
        };
        Ok(Response::new(resp))
    }

    async fn list_volumes(
        &self,
        _request: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        unimplemented("ListVolumes")
    }

    async fn get_capacity(
        &self,
        _request: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        unimplemented("GetCapacity")
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: vec![csi::ControllerServiceCapability {
                r#type: Some(ccap::Type::Rpc(ccap::Rpc {
                    r#type: ccap::rpc::Type::CreateDeleteVolume as i32,
                })),
            }],
        }))
    }

    async fn create_snapshot(
        &self,
        _request: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        unimplemented("CreateSnapshot")
    }

    async fn delete_snapshot(
        &self,
        _request: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        unimplemented("DeleteSnapshot")
    }

    async fn list_snapshots(
        &self,
        _request: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        unimplemented("ListSnapshots")
    }

    async fn controller_expand_volume(
        &self,
        _request: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        unimplemented("ControllerExpandVolume")
    }

    async fn controller_get_volume(
        &self,
        _request: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        unimplemented("ControllerGetVolume")
    }

    async fn controller_modify_volume(
        &self,
        _request: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        unimplemented("ControllerModifyVolume")
    }
}

fn created_response(c: &Created) -> csi::CreateVolumeResponse {
    csi::CreateVolumeResponse {
        volume: Some(csi::Volume {
            capacity_bytes: c.capacity,
            volume_id: c.volume_id.clone(),
            volume_context: c.context.clone().into_iter().collect(),
            content_source: None,
            accessible_topology: Vec::new(),
        }),
    }
}
