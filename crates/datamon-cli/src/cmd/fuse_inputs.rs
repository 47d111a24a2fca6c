//! Inputs of a run mounted read-only with FUSE: the [`datamon::InputMounter`] of `run exec
//! --mount-inputs` and of the pod sidecar.

/// Mounts run inputs read-only with FUSE, sharing the chunk cache of `datamon bundle mount`.
pub(crate) struct FuseInputs {
    /// The chunk cache folder.
    pub(crate) cache_dir: std::path::PathBuf,
}

/// A mounted input: unmounted when the run's plan is dropped.
struct MountedInput(Option<datamon_fuse::Mount>);

impl Drop for MountedInput {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            if let Err(e) = m.unmount() {
                tracing::warn!("cannot unmount a run input: {e}");
            }
        }
    }
}

impl datamon::InputMounter for FuseInputs {
    fn mount<'a>(
        &'a self,
        dm: &'a datamon::Datamon,
        repo: &'a datamon::RepoName,
        bundle: &'a datamon::BundleId,
        at: &'a std::path::Path,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = datamon::Result<Box<dyn Send + Sync>>> + Send + 'a>,
    > {
        Box::pin(async move {
            let opts = datamon::vfs::VfsOptions {
                cache_dir: Some(self.cache_dir.clone()),
                ..datamon::vfs::VfsOptions::default()
            };
            let vfs = dm
                .vfs(repo, bundle, opts, tokio::runtime::Handle::current())
                .await?;
            let at_owned = at.to_owned();
            let m = tokio::task::spawn_blocking(move || {
                datamon_fuse::mount_read_only(vfs, &at_owned, &datamon_fuse::MountConfig::default())
            })
            .await
            .map_err(|e| datamon::Error::Task(e.to_string()))?
            .map_err(|source| datamon::Error::Io {
                path: at.to_owned(),
                source,
            })?;
            Ok(Box::new(MountedInput(Some(m))) as Box<dyn Send + Sync>)
        })
    }
}
