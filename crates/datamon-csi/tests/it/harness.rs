//! A store with a repo and bundles, a driver serving on a unix socket (in this process, or in a
//! child process that a test can kill), and gRPC clients connected to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datamon::{Datamon, NoProgress, OpenOptions, RepoName, UploadContext, UploadOptions};
use datamon_csi::csi;
use datamon_csi::csi::controller_client::ControllerClient;
use datamon_csi::csi::identity_client::IdentityClient;
use datamon_csi::csi::node_client::NodeClient;
use datamon_csi::csi::volume_capability::access_mode::Mode as AccessMode;
use tonic::transport::Channel;

/// Whether `DATAMON_TEST_REQUIRE` names `what` (or `all`).
pub fn required(what: &str) -> bool {
    std::env::var("DATAMON_TEST_REQUIRE")
        .is_ok_and(|r| r.split(',').any(|x| x.trim() == what || x.trim() == "all"))
}

/// Whether FUSE mounts can be made here; when not, fails under `DATAMON_TEST_REQUIRE=fuse`,
/// else prints that the test is skipped.
#[track_caller]
pub fn fuse_available() -> bool {
    let why = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse does not exist")
    } else if !rustix::process::geteuid().is_root() {
        Some("the driver mounts as root, and this test does not run as root")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            assert!(
                !required("fuse"),
                "fuse is required (DATAMON_TEST_REQUIRE) but {why}"
            );
            eprintln!("skipping: {why} (with DATAMON_TEST_REQUIRE=fuse this is a failure)");
            false
        }
    }
}

/// A store in a temporary directory with repo `data`: bundle `first` (label `prod`) and
/// `second`, from the folders `src1` and `src2`.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub store_url: String,
    pub dm: Datamon,
    pub repo: RepoName,
    pub first: datamon::Bundle,
    pub second: datamon::Bundle,
}

pub fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

impl Fixture {
    pub async fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        let store_url = format!("file://{}", store.display());
        let dm = Datamon::open(&store_url, OpenOptions::default())
            .await
            .unwrap();
        let repo: RepoName = "data".parse().unwrap();
        dm.create_repo(&repo, "test data").await.unwrap();
        let src1 = tmp.path().join("src1");
        std::fs::create_dir_all(src1.join("sub/deeper")).unwrap();
        std::fs::write(src1.join("a.txt"), b"hello\n").unwrap();
        std::fs::write(src1.join("sub/big.bin"), data(3_000_000, 7)).unwrap();
        std::fs::write(src1.join("sub/deeper/c.csv"), b"x,y\n1,2\n").unwrap();
        std::fs::write(src1.join("empty"), b"").unwrap();
        let first = upload(&dm, &repo, &src1, Some("prod")).await;
        let src2 = tmp.path().join("src2");
        std::fs::create_dir_all(&src2).unwrap();
        std::fs::write(src2.join("only-in-second"), b"2").unwrap();
        let second = upload(&dm, &repo, &src2, None).await;
        Fixture {
            tmp,
            store_url,
            dm,
            repo,
            first,
            second,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// The store goes away (its directory is replaced by a file: every access fails).
    pub fn store_down(&self) {
        std::fs::rename(self.path("store"), self.path("store.away")).unwrap();
        std::fs::write(self.path("store"), b"not a store").unwrap();
    }

    /// The store comes back.
    pub fn store_up(&self) {
        std::fs::remove_file(self.path("store")).unwrap();
        std::fs::rename(self.path("store.away"), self.path("store")).unwrap();
    }

    pub fn options(&self, state: &str) -> datamon_csi::DriverOptions {
        datamon_csi::DriverOptions::new(&self.store_url, "node-1", self.path(state))
    }
}

pub async fn upload(
    dm: &Datamon,
    repo: &RepoName,
    dir: &Path,
    label: Option<&str>,
) -> datamon::Bundle {
    let ctx = UploadContext {
        repo: repo.clone(),
        path: dir.to_owned(),
        message: format!("from {}", dir.display()),
    };
    let opts = UploadOptions {
        label: label.map(|l| l.parse().unwrap()),
        ..UploadOptions::default()
    };
    dm.upload(ctx, opts, &NoProgress).await.unwrap().bundle
}

/// gRPC clients of one driver.
pub struct Clients {
    pub identity: IdentityClient<Channel>,
    pub node: NodeClient<Channel>,
    pub controller: ControllerClient<Channel>,
}

pub async fn connect(socket: &Path) -> Clients {
    let path = socket.to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the driver never listened on {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The socket file may be a killed driver's until the new one binds it: retry refusals.
    let channel = loop {
        let p = path.clone();
        match tonic::transport::Endpoint::try_from("http://[::1]:1")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                tokio::net::UnixStream::connect(p.clone())
            }))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cannot connect to the driver on {}: {e}",
                    path.display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    Clients {
        identity: IdentityClient::new(channel.clone()),
        node: NodeClient::new(channel.clone()),
        controller: ControllerClient::new(channel),
    }
}

/// A driver served by this process until dropped.
pub struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcess {
    pub async fn start(opts: datamon_csi::DriverOptions) -> (InProcess, Clients) {
        let socket = opts.state_dir.join("csi.sock");
        let driver = datamon_csi::Driver::new(opts);
        driver.recover().await;
        let listener = datamon_csi::bind(&format!("unix://{}", socket.display())).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            datamon_csi::serve(driver, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let clients = connect(&socket).await;
        (
            InProcess {
                stop: Some(tx),
                task: Some(task),
            },
            clients,
        )
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// A volume capability: a filesystem with this access mode.
pub fn cap(mode: AccessMode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(csi::volume_capability::AccessType::Mount(
            csi::volume_capability::MountVolume::default(),
        )),
    }
}

/// A block volume capability (never supported).
pub fn block_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode {
            mode: AccessMode::SingleNodeReaderOnly as i32,
        }),
        access_type: Some(csi::volume_capability::AccessType::Block(
            csi::volume_capability::BlockVolume::default(),
        )),
    }
}

pub fn attrs(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A publish request as the kubelet sends it.
pub fn publish(
    volume_id: &str,
    target: &Path,
    context: HashMap<String, String>,
    readonly: bool,
    mode: AccessMode,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: volume_id.to_owned(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap(mode)),
        readonly,
        volume_context: context,
        ..Default::default()
    }
}

pub fn unpublish(volume_id: &str, target: &Path) -> csi::NodeUnpublishVolumeRequest {
    csi::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_owned(),
        target_path: target.display().to_string(),
    }
}

/// Every file under `dir` (relative path -> bytes), directories as `None`.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<String, Option<Vec<u8>>>,
    ) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                walk(root, &e.path(), out);
            } else {
                out.insert(rel, Some(std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Whether something is mounted at `p`.
pub fn mounted(p: &Path) -> bool {
    datamon_fuse::is_mounted(p)
}

/// A driver in a child process (this test binary, running [`crate::node::driver_process`]),
/// so that a test can kill it.
pub struct Child {
    pub child: std::process::Child,
    pub socket: PathBuf,
}

impl Child {
    pub fn spawn(fx: &Fixture, state: &str) -> Child {
        let state_dir = fx.path(state);
        std::fs::create_dir_all(&state_dir).unwrap();
        let socket = state_dir.join("csi.sock");
        let _ = std::fs::remove_file(&socket);
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "node::driver_process", "--nocapture"])
            .env("DATAMON_CSI_TEST_STORE", &fx.store_url)
            .env("DATAMON_CSI_TEST_STATE", &state_dir)
            .spawn()
            .unwrap();
        Child { child, socket }
    }

    /// The real `datamon csi` command of the binary at `bin`, serving the node and controller
    /// (for measurements of the process users run: its allocator, its flags).
    pub fn spawn_binary(fx: &Fixture, state: &str, bin: &Path) -> Child {
        let state_dir = fx.path(state);
        std::fs::create_dir_all(&state_dir).unwrap();
        let socket = state_dir.join("csi.sock");
        let _ = std::fs::remove_file(&socket);
        let child = std::process::Command::new(bin)
            .arg("--store")
            .arg(&fx.store_url)
            .args(["csi", "--node-id", "node-1", "--endpoint"])
            .arg(format!("unix://{}", socket.display()))
            .arg("--state-dir")
            .arg(&state_dir)
            .env("DATAMON_HOME", fx.path("home"))
            .spawn()
            .unwrap();
        Child { child, socket }
    }

    /// SIGKILL: the driver has no chance to unmount.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unmounts `p` at the end of a test (when an assertion failed before the driver did).
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = datamon_fuse::unmount_path(&self.0);
        }
    }
}
