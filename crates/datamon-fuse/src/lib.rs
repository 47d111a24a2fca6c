//! FUSE adapters over datamon: the read-only mount of a bundle ([`datamon::vfs::Vfs`]) and the
//! mutable mount of a work tree ([`mount_work_tree`], see [`mutable`]).
//!
//! All domain logic (lazy tree loading, chunk cache, read-ahead, verification, time limits,
//! placeholders and their hydration) lives in the library; this crate only translates FUSE
//! requests into [`Vfs`] calls or local file operations, and errors into errno values. Both
//! mounts are named `datamon` (as root: `datamon on DIR type fuse.datamon`; see [`mount`]) and
//! served by several threads so that parallel requests do not wait for each other. The
//! read-only mount is `ro`.
//!
//! ```no_run
//! # async fn demo(vfs: datamon::vfs::Vfs) -> std::io::Result<()> {
//! let mount = datamon_fuse::mount_read_only(vfs, "/mnt/data".as_ref(), &Default::default())?;
//! // ... serve until asked to stop, then:
//! mount.unmount()?;
//! # Ok(()) }
//! ```
//!
//! [`metrics`] is the Prometheus endpoint that mounts (and the CSI node plugin) serve.

pub mod metrics;
pub mod mutable;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use datamon::types::EntryKind;
use datamon::vfs::{Attr, Vfs};
use datamon::{Error, VfsErrorKind};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
    SessionACL,
};

pub use fuser::BackgroundSession;
pub use mutable::{mount_work_tree, MutableFs};

/// How long the kernel may cache names and attributes: the bundle never changes.
const TTL: Duration = Duration::from_secs(3600);

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Let other users than the mounting one read the mount (`allow_other`).
    pub allow_other: bool,
    /// Threads serving FUSE requests (default 8).
    pub threads: usize,
    /// Owner shown for every entry (default: the mounting process's owner of the mount point).
    pub uid: u32,
    /// Group shown for every entry.
    pub gid: u32,
    /// Kernel read-ahead of the mount in KiB (default 4096; 0 keeps the kernel's default).
    pub readahead_kb: u32,
    /// Past this many known inodes, the kernel is asked to drop the oldest names, so memory
    /// stays bounded when millions of files are listed (default 100,000; 0: no bound).
    pub max_inodes: usize,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            threads: 8,
            uid: 0,
            gid: 0,
            readahead_kb: 4096,
            max_inodes: 100_000,
        }
    }
}

/// A mounted filesystem, served from background threads until [`Mount::unmount`] (or until it
/// is unmounted from outside).
#[derive(Debug)]
pub struct Mount {
    session: BackgroundSession,
    mountpoint: PathBuf,
    /// Mounted by this crate with mount(2) (type `fuse.datamon`), not by fuser.
    own_mount: bool,
    /// Set to stop the helper threads (the inode bound).
    stop: Arc<AtomicBool>,
}

impl Mount {
    /// Whether the session has ended (the filesystem was unmounted from outside).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmounts and waits for the session to end.
    ///
    /// A busy mount (a file still open) is detached lazily: it disappears from the namespace at
    /// once and the kernel ends it when the last file is closed, or when this process exits.
    /// When this user may not unmount (not root), fuser runs `fusermount3 -u -z`.
    ///
    /// # Errors
    /// The unmount fails for another reason than "busy".
    pub fn unmount(self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if self.is_finished() {
            // Unmounted from outside. Dropping the session would make fuser unmount the path
            // once more, which could hit a newer mount there: leak it instead (the process is
            // ending).
            std::mem::forget(self.session);
            return Ok(());
        }
        if self.own_mount {
            use nix::mount::{umount2, MntFlags};
            return match umount2(&self.mountpoint, MntFlags::empty()) {
                Ok(()) => self.session.join(),
                // Already detached from outside: the session ends when its last file closes.
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
                Err(nix::errno::Errno::EBUSY) => {
                    // The session ends when the last open file is closed; do not wait for it.
                    tracing::info!("{} is busy: detaching it", self.mountpoint.display());
                    umount2(&self.mountpoint, MntFlags::MNT_DETACH)?;
                    Ok(())
                }
                Err(e) => Err(e.into()),
            };
        }
        match self.session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) => {
                tracing::info!("{} is busy: detaching it", self.mountpoint.display());
                nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH)?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Mounts `vfs` read-only at `mountpoint` and serves it from background threads until the
/// returned [`Mount`] is unmounted. Returns once the mount is in place.
///
/// # Errors
/// The mount fails (no `/dev/fuse`, not permitted, not a directory).
pub fn mount_read_only(
    vfs: Vfs,
    mountpoint: &Path,
    config: &MountConfig,
) -> std::io::Result<Mount> {
    let fs = ReadOnlyFs {
        vfs,
        uid: config.uid,
        gid: config.gid,
    };
    let vfs = fs.vfs.clone();
    let m = mount(fs, mountpoint, config, true)?;
    if config.readahead_kb > 0 {
        set_readahead(mountpoint, config.readahead_kb);
    }
    if config.max_inodes > 0 {
        bound_inodes(vfs, &m, config.max_inodes);
    }
    Ok(m)
}

/// Keeps the number of inodes the vfs knows near `max`: twice a second, when there are more,
/// asks the kernel to drop the names of the oldest (down to 3/4 of `max`); the kernel forgets
/// the inodes of those not in use, and the vfs drops them.
fn bound_inodes(vfs: Vfs, m: &Mount, max: usize) {
    let notifier = m.session.notifier();
    let stop = m.stop.clone();
    let spawned = std::thread::Builder::new()
        .name("datamon-inodes".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                if vfs.inode_count() <= max {
                    continue;
                }
                for (parent, name) in vfs.entries_over(max / 4 * 3) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Err(e) = notifier.inval_entry(INodeNo(parent), OsStr::new(&name)) {
                        // ENOENT: the kernel no longer has it. Anything else: stop trying.
                        if e.raw_os_error() != Some(nix::errno::Errno::ENOENT as i32) {
                            tracing::debug!("cannot invalidate entries: {e}");
                            return;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the inode bound thread: {e}");
    }
}

/// Mounts `fs` at `mountpoint`, served by `config.threads` threads.
///
/// As root the mount is made here with mount(2) and the type `fuse.datamon` (so `findmnt` and
/// `/proc/mounts` name datamon); otherwise, or when that fails, fuser mounts it (through
/// `fusermount3` for other users), with the type `fuse` and the source `datamon`.
///
/// # Errors
/// The mount fails (no `/dev/fuse`, not permitted, not a directory).
pub fn mount<FS: Filesystem>(
    fs: FS,
    mountpoint: &Path,
    config: &MountConfig,
    read_only: bool,
) -> std::io::Result<Mount> {
    let mut options = vec![
        MountOption::FSName("datamon".into()),
        MountOption::Subtype("datamon".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    if read_only {
        options.push(MountOption::RO);
    }
    let mut cfg = Config::default();
    if config.allow_other {
        cfg.acl = SessionACL::All;
    }
    cfg.mount_options = options;
    cfg.n_threads = Some(config.threads.max(1));
    match mount_sys(mountpoint, config, read_only) {
        Ok(fd) => {
            let acl = cfg.acl;
            let session = match fuser::Session::from_fd(fs, fd, acl, cfg) {
                Ok(s) => s.spawn(),
                Err(e) => Err(e),
            };
            match session {
                Ok(session) => Ok(Mount {
                    session,
                    mountpoint: mountpoint.to_owned(),
                    own_mount: true,
                    stop: Arc::default(),
                }),
                Err(e) => {
                    let _ = unmount_path(mountpoint);
                    Err(e)
                }
            }
        }
        Err(e) => {
            tracing::debug!("mount(2) of fuse.datamon failed ({e}); letting fuser mount");
            Ok(Mount {
                session: fuser::spawn_mount(fs, mountpoint, &cfg)?,
                mountpoint: mountpoint.to_owned(),
                own_mount: false,
                stop: Arc::default(),
            })
        }
    }
}

/// Opens `/dev/fuse` and mounts it at `mountpoint` with the type `fuse.datamon`. Needs root (or
/// CAP_SYS_ADMIN).
fn mount_sys(
    mountpoint: &Path,
    config: &MountConfig,
    read_only: bool,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::mount::{mount, MsFlags};
    use std::os::fd::AsRawFd as _;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if config.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(
        Some("datamon"),
        mountpoint,
        Some("fuse.datamon"),
        flags,
        Some(data.as_str()),
    )?;
    Ok(dev.into())
}

/// Raises the kernel's read-ahead for the mount (its backing device's `read_ahead_kb`), so that
/// sequential readers send fewer, larger requests. Best effort: needs root; failures are logged.
#[allow(clippy::disallowed_methods)] // a sysfs knob, not a file to replace atomically
fn set_readahead(mountpoint: &Path, kb: u32) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(m) = std::fs::metadata(mountpoint) else {
        return;
    };
    let path = format!("/sys/class/bdi/{}/read_ahead_kb", device_name(m.dev()));
    if let Err(e) = std::fs::write(&path, kb.to_string()) {
        tracing::debug!("cannot set {path}: {e}");
    }
}

/// A device number as the kernel names it in sysfs: `major:minor`.
fn device_name(dev: u64) -> String {
    format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// Unmounts whatever is mounted at `target`; a busy mount is detached lazily. Not being mounted
/// is not an error.
///
/// # Errors
/// The unmount is not permitted.
pub fn unmount_path(target: &Path) -> std::io::Result<()> {
    use nix::errno::Errno as E;
    use nix::mount::{umount2, MntFlags};
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(E::EINVAL | E::ENOENT) => Ok(()),
        Err(E::EBUSY) => Ok(umount2(target, MntFlags::MNT_DETACH)?),
        Err(e) => Err(e.into()),
    }
}

/// Whether something is mounted exactly at `dir` (an absolute path), per
/// `/proc/self/mountinfo`.
pub fn is_mounted(dir: &Path) -> bool {
    let Some(dir) = dir.to_str() else {
        return false;
    };
    let escaped = dir
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(4) == Some(escaped.as_str()))
    })
}

/// The read-only filesystem.
#[derive(Debug)]
pub struct ReadOnlyFs {
    vfs: Vfs,
    uid: u32,
    gid: u32,
}

impl ReadOnlyFs {
    fn attr(&self, a: &Attr) -> FileAttr {
        let t = if a.mtime_ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(a.mtime_ns as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(a.mtime_ns.unsigned_abs())
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: file_type(a.kind),
            perm: (a.mode & 0o7777) as u16,
            nlink: if a.kind == EntryKind::Dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 << 10,
            flags: 0,
        }
    }
}

fn file_type(k: EntryKind) -> FileType {
    match k {
        EntryKind::Dir => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

/// Maps a library error to an errno, logging failures that are not the caller's doing.
fn errno(op: &str, e: &Error) -> Errno {
    match e {
        Error::Vfs { kind, .. } => match kind {
            VfsErrorKind::Stale => Errno::ESTALE,
            VfsErrorKind::NotADirectory => Errno::ENOTDIR,
            VfsErrorKind::IsADirectory => Errno::EISDIR,
            _ => Errno::EINVAL,
        },
        _ => {
            tracing::error!(op, error = %e, "returning EIO");
            Errno::EIO
        }
    }
}

impl Filesystem for ReadOnlyFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // Listing with attributes saves one lookup round trip per entry for `find`, `ls -l`.
        // Always (not FUSE_READDIRPLUS_AUTO, with which the kernel falls back to plain listings
        // plus a lookup per entry for most directories of a `find`).
        let want = fuser::InitFlags::FUSE_DO_READDIRPLUS;
        if let Err(missing) = config.add_capabilities(want) {
            tracing::debug!("kernel lacks {missing:?}");
        }
        // More read-ahead requests in flight keep a sequential reader's pipeline full.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match self.vfs.lookup_blocking(parent.0, name) {
            Ok(Some(a)) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.vfs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vfs.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno("readlink", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.vfs.open_blocking(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.vfs.read_blocking(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno("read", &e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.vfs.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.vfs.getattr(ino.0) {
            Ok(a) if a.kind == EntryKind::Dir => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR)
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Offsets: 1 is ".", 2 is "..", 3 + i follows entry i.
        let mut off = offset;
        if off == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            if reply.add(ino, 2, FileType::Directory, "..") {
                return reply.ok();
            }
            off = 2;
        }
        let from = (off - 2) as usize;
        let r = self.vfs.readdir_blocking(ino.0, from, |next, e| {
            reply.add(INodeNo(e.ino), next as u64 + 2, file_type(e.kind), &e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdir", &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // As readdir; "." and ".." are not counted as lookups by the kernel.
        let mut off = offset;
        if off < 2 {
            let Ok(me) = self.vfs.getattr(ino.0) else {
                return reply.error(Errno::ESTALE);
            };
            let attr = self.attr(&me);
            if off == 0 && reply.add(ino, 1, ".", &TTL, &attr, Generation(0)) {
                return reply.ok();
            }
            if reply.add(ino, 2, "..", &TTL, &attr, Generation(0)) {
                return reply.ok();
            }
            off = 2;
        }
        let from = (off - 2) as usize;
        let r = self
            .vfs
            .readdir_plus_blocking(ino.0, from, |next, name, a| {
                reply.add(
                    INodeNo(a.ino),
                    next as u64 + 2,
                    name,
                    &TTL,
                    &self.attr(&a),
                    Generation(0),
                )
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdirplus", &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.vfs.stats();
        reply.statfs(s.bytes.div_ceil(4096), 0, 0, s.files, 0, 4096, 255, 4096);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_major_colon_minor() {
        use std::os::unix::fs::MetadataExt as _;
        let null = std::fs::metadata("/dev/null").expect("/dev/null exists");
        assert_eq!(device_name(null.rdev()), "1:3");
        // Numbers past the 8-bit fields of the old encoding.
        assert_eq!(device_name(rustix::fs::makedev(259, 74_565)), "259:74565");
        assert_eq!(device_name(rustix::fs::makedev(4_660, 5)), "4660:5");
    }
}
