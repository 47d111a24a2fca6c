//! The mutable mount: a passthrough filesystem over a work tree's `files/` directory, with
//! copy-on-write of the base bundle's files.
//!
//! Every request is forwarded to the same path under `files/`, with the caller's semantics
//! (rename over files, `RENAME_NOREPLACE`/`RENAME_EXCHANGE`, fsync, xattrs, hard links,
//! fallocate; POSIX and BSD locks are kept by the kernel). Inode numbers are the mount's own,
//! one per backing file: the table is keyed by the backing (st_dev, st_ino), so the names of a
//! hard link share one inode (and its nlink), and maps each inode to the (parent inode, name)
//! pairs known to lead to it, so a rename is one table update whatever the size of the renamed
//! directory. A local path longer than one system call takes (the work tree's folder in front
//! of a path valid in the mount) is reached relative to a handle on its directory.
//!
//! The kernel checks permissions (`default_permissions`; `allow_other` lets other users in).
//! Serving as root, creations (create, mkdir, mknod, symlink, link) run on the FUSE thread
//! with the caller's fsuid, fsgid and supplementary groups, as a passthrough filesystem does,
//! so the backing filesystem gives new files their owner and group (the directory's under a
//! setgid directory) and answers EACCES and EPERM as it would to the caller.
//!
//! Placeholders ([`datamon::placeholder`]) are where copy-on-write happens:
//! - `getattr` shows the placeholder's own stat (size, mode, mtime are exact; blocks count the
//!   full size, so `du` and sparse-aware copies see a normal file);
//! - opening one read-only reads from the store through the base bundle's [`Vfs`] (only the
//!   chunks asked for, verified, through the chunk cache); once another handle hydrated the file,
//!   the handle reads the local file;
//! - opening one for writing, `truncate` to a non-zero size and `link` first hydrate it (its
//!   content is written into it from the store); `O_TRUNC` or `truncate` to zero just empties
//!   it.
//!
//! Attributes under `user.datamon.` are hidden and cannot be set through the mount.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datamon::placeholder;
use datamon::vfs::Vfs;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::MountConfig;

mod inodes;
use inodes::{Inodes, Node};

/// How long the kernel may cache names and attributes. Every change goes through this mount,
/// so the kernel's own updates keep them right; the short TTL bounds the effect of edits made
/// under `files/` directly.
const TTL: Duration = Duration::from_secs(1);

/// The root's inode number.
const ROOT: u64 = 1;

/// Hydrations of different files run in parallel; one file's are serialized by these locks.
const HYDRATION_LOCKS: usize = 16;

/// Mounts the work tree folder `files` at `mountpoint`, read-write, and serves it from
/// background threads until the returned [`crate::Mount`] is unmounted. `base` reads the
/// content of placeholders (the work tree's base bundle); `None` when the work tree has none.
///
/// # Errors
/// The mount fails (no `/dev/fuse`, not permitted, not a directory).
pub fn mount_work_tree(
    files: &Path,
    base: Option<Vfs>,
    mountpoint: &Path,
    config: &MountConfig,
) -> std::io::Result<crate::Mount> {
    let fs = MutableFs::new(files.to_owned(), base);
    crate::mount(fs, mountpoint, config, false)
}

#[derive(Debug)]
enum Handle {
    File(File),
    /// A placeholder opened read-only: read from the store until the file is hydrated, then
    /// from `file` (the same local inode, hydrated in place).
    Base {
        vfs_fh: u64,
        file: File,
        st_ino: u64,
    },
    /// A directory listing, taken at opendir: names, types and backing inode numbers.
    Dir(Vec<(OsString, FileType, u64)>),
}

/// The passthrough filesystem (see the module docs).
#[derive(Debug)]
pub struct MutableFs {
    root: PathBuf,
    base: Option<Vfs>,
    inodes: Mutex<Inodes>,
    /// Open handles, with the inode each was opened on.
    handles: Mutex<HashMap<u64, (u64, Arc<Handle>)>>,
    next_fh: AtomicU64,
    hydrating: Vec<Mutex<()>>,
    /// Local inode numbers of placeholders this process hydrated or emptied.
    hydrated: Mutex<HashSet<u64>>,
    /// Serving as root: file creations run with the caller's fsuid, fsgid and groups.
    as_root: bool,
    /// The device of `files/`.
    dev: u64,
    /// This process's groups, restored after a request made with the caller's.
    groups: Vec<rustix::process::Gid>,
    /// The permission bits this process's umask removes from new files (put back: the
    /// kernel already applied the caller's umask).
    umask: u32,
}

/// The supplementary groups of process `pid` (none when it cannot be read).
fn caller_groups(pid: u32) -> Vec<rustix::process::Gid> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .map(rustix::process::Gid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

/// This process's umask (read once, when the filesystem is made).
fn process_umask() -> u32 {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.bits()
}

/// Local paths at least this long are given relative to a directory handle.
const LONG_PATH: usize = 4000;

/// A local path (see [`MutableFs::local_path`]): valid while this lives.
#[derive(Debug)]
struct LocalPath {
    path: PathBuf,
    _dir: Option<std::os::fd::OwnedFd>,
}

impl std::ops::Deref for LocalPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for LocalPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Maps a library error to an errno, logging what is not the caller's doing.
fn lib_errno(op: &str, e: &datamon::Error) -> Errno {
    match e {
        datamon::Error::Io { source, .. } if source.raw_os_error().is_some() => io_errno(source),
        _ => {
            tracing::error!(op, error = %e, "returning EIO");
            Errno::EIO
        }
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn kind(m: &Metadata) -> FileType {
    let t = m.file_type();
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_socket() {
        FileType::Socket
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else {
        FileType::RegularFile
    }
}

fn to_timespec(t: Option<TimeOrNow>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
                Err(e) => {
                    let d = e.duration();
                    let mut sec = -(d.as_secs() as i64);
                    let mut nsec = -i64::from(d.subsec_nanos());
                    if nsec < 0 {
                        sec -= 1;
                        nsec += 1_000_000_000;
                    }
                    (sec, nsec)
                }
            };
            rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            }
        }
    }
}

impl MutableFs {
    /// A filesystem over `root` (see [`mount_work_tree`]).
    pub fn new(root: PathBuf, base: Option<Vfs>) -> MutableFs {
        let mut inodes = Inodes {
            next: ROOT + 1,
            ..Default::default()
        };
        let backing = std::fs::symlink_metadata(&root)
            .map(|m| (m.dev(), m.ino()))
            .unwrap_or_default();
        inodes.map.insert(
            ROOT,
            Node {
                names: Vec::new(),
                lookups: 1,
                backing,
                kind: libc::S_IFDIR,
            },
        );
        inodes.by_backing.insert(backing, ROOT);
        MutableFs {
            root,
            base,
            inodes: Mutex::new(inodes),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            hydrating: (0..HYDRATION_LOCKS).map(|_| Mutex::new(())).collect(),
            hydrated: Mutex::new(HashSet::new()),
            as_root: rustix::process::geteuid().is_root(),
            dev: backing.0,
            groups: nix::unistd::getgroups()
                .unwrap_or_default()
                .into_iter()
                .map(|g| rustix::process::Gid::from_raw(g.as_raw()))
                .collect(),
            umask: process_umask(),
        }
    }

    /// Runs `f` on this thread with the caller's fsuid, fsgid and supplementary groups (when
    /// serving as root), as a passthrough filesystem does: the backing filesystem then makes
    /// new files the caller's (in the directory's group under a setgid directory) and answers
    /// EACCES and EPERM as it would to the caller.
    fn as_caller<T>(&self, req: &Request, f: impl FnOnce() -> T) -> T {
        if !self.as_root || req.uid() == 0 {
            return f();
        }
        let groups = caller_groups(req.pid());
        let _ = rustix::thread::set_thread_groups(&groups);
        let gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(req.gid()));
        let uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(req.uid()));
        // Put back even if `f` panics: the next request on this thread must not run as this
        // caller.
        let _restore = RestoreCredentials {
            uid,
            gid,
            groups: &self.groups,
        };
        f()
    }

    /// Puts back the permission bits of a new `path` that this process's umask removed.
    fn restore_umasked(&self, path: &Path, perm: u32) {
        if perm & self.umask == 0 {
            return;
        }
        if let Ok(m) = std::fs::symlink_metadata(path) {
            let want = m.mode() & 0o7777 | (perm & self.umask);
            if want != m.mode() & 0o7777 {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(want));
            }
        }
    }

    /// The local path of an inode.
    fn path(&self, ino: u64) -> Result<LocalPath, Errno> {
        self.local_path(ino, None)
    }

    /// The local path of `ino`, or of its entry `name`. A path too long for one system call
    /// (the work tree's folder in front of a path that is valid in the mount) is given relative
    /// to a handle on its directory: `/proc/self/fd/N/NAME`.
    fn local_path(&self, ino: u64, name: Option<&OsStr>) -> Result<LocalPath, Errno> {
        let mut parts = Vec::new();
        {
            let inodes = lock(&self.inodes);
            let mut at = ino;
            while at != ROOT {
                let n = inodes.map.get(&at).ok_or(Errno::ESTALE)?;
                // A name whose directory the kernel has forgotten is no way there; another
                // name of the same file (a hard link) may be.
                let (parent, name) = n
                    .names
                    .iter()
                    .find(|(p, _)| *p == ROOT || inodes.map.contains_key(p))
                    .or_else(|| n.names.first())
                    .ok_or(Errno::ENOENT)?;
                parts.push(name.clone());
                at = *parent;
            }
        }
        parts.reverse();
        parts.extend(name.map(OsStr::to_owned));
        let len = self.root.as_os_str().len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        if len < LONG_PATH {
            let mut p = self.root.clone();
            p.extend(&parts);
            return Ok(LocalPath {
                path: p,
                _dir: None,
            });
        }
        let Some(last) = parts.pop() else {
            return Err(Errno::ENAMETOOLONG);
        };
        let flags = rustix::fs::OFlags::PATH
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC;
        let errno = |e: rustix::io::Errno| Errno::from_i32(e.raw_os_error());
        let mut dir =
            rustix::fs::open(&self.root, flags, rustix::fs::Mode::empty()).map_err(errno)?;
        for part in &parts {
            dir = rustix::fs::openat(&dir, part.as_os_str(), flags, rustix::fs::Mode::empty())
                .map_err(errno)?;
        }
        use std::os::fd::AsRawFd as _;
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        p.push(last);
        Ok(LocalPath {
            path: p,
            _dir: Some(dir),
        })
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<LocalPath, Errno> {
        if name.as_bytes().contains(&b'/') || name == ".." || name == "." {
            return Err(Errno::EINVAL);
        }
        self.local_path(parent, Some(name))
    }

    /// The inode of `parent/name` (whose backing file is `m`), counting one lookup.
    fn intern(&self, parent: u64, name: &OsStr, m: &Metadata) -> u64 {
        lock(&self.inodes).intern(parent, name, m)
    }

    fn attr(&self, ino: u64, m: &Metadata, path: Option<&Path>) -> FileAttr {
        let mut blocks = m.blocks();
        // A placeholder is sparse: show the blocks of its content.
        if self.base.is_some() && m.is_file() && blocks * 512 < m.len() {
            if let Some(p) = path {
                if matches!(placeholder::read(p), Ok(Some(_))) {
                    blocks = m.len().div_ceil(512);
                }
            }
        }
        FileAttr {
            ino: INodeNo(ino),
            size: m.len(),
            blocks,
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: time(m.ctime(), m.ctime_nsec()),
            kind: kind(m),
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            blksize: m.blksize() as u32,
            flags: 0,
        }
    }

    /// Looks up `parent/name` after it was created, counting one lookup.
    fn entry(&self, parent: u64, name: &OsStr, path: &Path, reply: ReplyEntry) {
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                let ino = self.intern(parent, name, &m);
                reply.entry(&TTL, &self.attr(ino, &m, Some(path)), Generation(0));
            }
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn add_handle(&self, ino: u64, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, (ino, Arc::new(h)));
        fh
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        lock(&self.handles)
            .get(&fh.0)
            .map(|(_, h)| h.clone())
            .ok_or(Errno::EBADF)
    }

    /// A local file open on `ino` (the kernel names no handle in fchmod and the like, which
    /// still work on an unlinked file).
    fn any_file(&self, ino: u64) -> Option<Arc<Handle>> {
        lock(&self.handles)
            .values()
            .find(|(i, h)| *i == ino && matches!(**h, Handle::File(_)))
            .map(|(_, h)| h.clone())
    }

    /// Makes the file at `path` hold its content if it is a placeholder (`empty`: make it an
    /// empty file instead). Returns whether it was one.
    fn materialize(&self, path: &Path, empty: bool) -> Result<bool, Errno> {
        let Some(vfs) = &self.base else {
            return Ok(false);
        };
        let m = std::fs::symlink_metadata(path).map_err(|e| io_errno(&e))?;
        if !m.is_file() {
            return Ok(false);
        }
        let _guard = lock(&self.hydrating[(m.ino() % HYDRATION_LOCKS as u64) as usize]);
        let r = if empty {
            placeholder::clear_blocking(path)
        } else {
            placeholder::hydrate_blocking(vfs, path)
        };
        match r {
            Ok(was) => {
                if was {
                    lock(&self.hydrated).insert(m.ino());
                    tracing::debug!(path = %path.display(), empty, "copied on write");
                }
                Ok(was)
            }
            Err(e) => Err(lib_errno("hydrate", &e)),
        }
    }

    fn open_file(&self, path: &Path, flags: i32) -> std::io::Result<File> {
        let acc = flags & libc::O_ACCMODE;
        let custom = flags
            & !(libc::O_ACCMODE
                | libc::O_CREAT
                | libc::O_EXCL
                | libc::O_TRUNC
                | libc::O_DIRECT
                | libc::O_NOCTTY);
        std::fs::OpenOptions::new()
            .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
            .truncate(flags & libc::O_TRUNC != 0 && acc != libc::O_RDONLY)
            .custom_flags(custom)
            .open(path)
    }

    /// Opens an existing file: copy-on-write for writers, the store for readers of a
    /// placeholder. Returns the handle.
    fn open_path(&self, ino: u64, path: &Path, flags: i32) -> Result<u64, Errno> {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let truncates = flags & libc::O_TRUNC != 0;
        if writes || truncates {
            self.materialize(path, truncates)?;
        } else if let Some(vfs) = &self.base {
            if let Some(b) = placeholder::read(path).map_err(|e| lib_errno("open", &e))? {
                let file = File::open(path).map_err(|e| io_errno(&e))?;
                let st_ino = file.metadata().map_err(|e| io_errno(&e))?.ino();
                let (vfs_fh, _) = vfs
                    .open_entry_blocking(&b.tree, b.entry)
                    .map_err(|e| lib_errno("open", &e))?;
                return Ok(self.add_handle(
                    ino,
                    Handle::Base {
                        vfs_fh,
                        file,
                        st_ino,
                    },
                ));
            }
        }
        let f = self.open_file(path, flags).map_err(|e| io_errno(&e))?;
        Ok(self.add_handle(ino, Handle::File(f)))
    }

    fn truncate(&self, path: &Path, size: u64) -> Result<(), Errno> {
        if self.materialize(path, size == 0)? && size == 0 {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(size))
            .map_err(|e| io_errno(&e))
    }
}

impl Filesystem for MutableFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let want = fuser::InitFlags::FUSE_DO_READDIRPLUS
            | fuser::InitFlags::FUSE_READDIRPLUS_AUTO
            | fuser::InitFlags::FUSE_ATOMIC_O_TRUNC;
        if let Err(missing) = config.add_capabilities(want) {
            tracing::debug!("kernel lacks {missing:?}");
        }
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) => {
                let ino = self.intern(parent.0, name, &m);
                reply.entry(&TTL, &self.attr(ino, &m, Some(&path)), Generation(0));
            }
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == ROOT {
            return;
        }
        let mut inodes = lock(&self.inodes);
        let Some(n) = inodes.map.get_mut(&ino.0) else {
            return;
        };
        n.lookups = n.lookups.saturating_sub(nlookup);
        if n.lookups == 0 {
            let n = inodes.map.remove(&ino.0).expect("present");
            for key in n.names {
                if inodes.by_name.get(&key) == Some(&ino.0) {
                    inodes.by_name.remove(&key);
                }
            }
            if inodes.by_backing.get(&n.backing) == Some(&ino.0) {
                inodes.by_backing.remove(&n.backing);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(fh) = fh {
            if let Ok(h) = self.handle(fh) {
                if let Handle::File(f) = &*h {
                    return match f.metadata() {
                        Ok(m) => reply.attr(&TTL, &self.attr(ino.0, &m, None)),
                        Err(e) => reply.error(io_errno(&e)),
                    };
                }
            }
        }
        let path = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) => reply.attr(&TTL, &self.attr(ino.0, &m, Some(&path))),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // An open file (possibly unlinked already) is changed through its descriptor; a file
        // open for writing is never a placeholder.
        let path = self.path(ino.0);
        let file = fh
            .and_then(|fh| self.handle(fh).ok())
            .filter(|h| matches!(**h, Handle::File(_)))
            .or_else(|| path.is_err().then(|| self.any_file(ino.0)).flatten());
        if let Some(h) = file {
            let Handle::File(f) = &*h else {
                unreachable!("filtered")
            };
            let r = (|| -> std::io::Result<Metadata> {
                if let Some(size) = size {
                    f.set_len(size)?;
                }
                if let Some(mode) = mode {
                    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
                }
                if uid.is_some() || gid.is_some() {
                    std::os::unix::fs::fchown(f, uid, gid)?;
                }
                if atime.is_some() || mtime.is_some() {
                    let times = rustix::fs::Timestamps {
                        last_access: to_timespec(atime),
                        last_modification: to_timespec(mtime),
                    };
                    rustix::fs::futimens(f, &times)?;
                }
                f.metadata()
            })();
            return match r {
                Ok(m) => reply.attr(&TTL, &self.attr(ino.0, &m, None)),
                Err(e) => reply.error(io_errno(&e)),
            };
        }
        let path = match path {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = (|| -> Result<(), Errno> {
            if let Some(size) = size {
                self.truncate(&path, size)?;
            }
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| io_errno(&e))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid).map_err(|e| io_errno(&e))?;
            }
            if atime.is_some() || mtime.is_some() {
                let times = rustix::fs::Timestamps {
                    last_access: to_timespec(atime),
                    last_modification: to_timespec(mtime),
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    &*path,
                    &times,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Errno::from_i32(e.raw_os_error()))?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            return reply.error(e);
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) => reply.attr(&TTL, &self.attr(ino.0, &m, Some(&path))),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .path(ino.0)
            .and_then(|p| std::fs::read_link(p).map_err(|e| io_errno(&e)))
        {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let perm = mode & !umask & 0o7777;
        // The umask fix-up runs as the caller too: a chmod by path as root could be sent
        // through a symlink that another user put in place of the new file.
        let r = self.as_caller(req, || {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &*path,
                rustix::fs::FileType::from_raw_mode(mode),
                rustix::fs::Mode::from_raw_mode(perm),
                u64::from(rdev),
            )
            .inspect(|()| self.restore_umasked(&path, perm))
        });
        if let Err(e) = r {
            return reply.error(Errno::from_i32(e.raw_os_error()));
        }
        self.entry(parent.0, name, &path, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let perm = mode & !umask & 0o7777;
        // The umask fix-up runs as the caller too (see mknod).
        let r = self.as_caller(req, || {
            rustix::fs::mkdirat(
                rustix::fs::CWD,
                &*path,
                rustix::fs::Mode::from_raw_mode(perm),
            )
            .inspect(|()| self.restore_umasked(&path, perm))
        });
        if let Err(e) = r {
            return reply.error(Errno::from_i32(e.raw_os_error()));
        }
        self.entry(parent.0, name, &path, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let last = std::fs::symlink_metadata(&path).map_or(true, |m| m.nlink() <= 1);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                lock(&self.inodes).detach(parent.0, name, last);
                reply.ok();
            }
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_dir(&path) {
            Ok(()) => {
                lock(&self.inodes).detach(parent.0, name, true);
                reply.ok();
            }
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let path = match self.child(parent.0, link_name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.as_caller(req, || std::os::unix::fs::symlink(target, &path)) {
            Ok(()) => self.entry(parent.0, link_name, &path, reply),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (from, to) = match (self.child(parent.0, name), self.child(newparent.0, newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        // Whether a file it replaces loses its last name.
        let replaced_last =
            std::fs::symlink_metadata(&to).map_or(true, |m| m.is_dir() || m.nlink() <= 1);
        let r = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &*from,
            rustix::fs::CWD,
            &*to,
            rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
        );
        if let Err(e) = r {
            return reply.error(Errno::from_i32(e.raw_os_error()));
        }
        let mut inodes = lock(&self.inodes);
        let a_key = (parent.0, name.to_owned());
        let b_key = (newparent.0, newname.to_owned());
        if inodes.by_name.contains_key(&a_key)
            && inodes.by_name.get(&a_key) == inodes.by_name.get(&b_key)
        {
            // Two names of one file: rename(2) leaves both.
            return reply.ok();
        }
        let a = inodes.by_name.remove(&a_key);
        let b = inodes.by_name.remove(&b_key);
        if let Some(b) = b {
            inodes.drop_name(b, &b_key, false);
        }
        if let Some(a) = a {
            inodes.drop_name(a, &a_key, false);
        }
        if let Some(a) = a {
            if let Some(n) = inodes.map.get_mut(&a) {
                n.names.push(b_key.clone());
            }
            inodes.by_name.insert(b_key, a);
        }
        if let Some(b) = b {
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                if let Some(n) = inodes.map.get_mut(&b) {
                    n.names.push(a_key.clone());
                }
                inodes.by_name.insert(a_key, b);
            } else if replaced_last {
                let gone = inodes.map.get(&b).is_some_and(|n| n.names.is_empty());
                if gone {
                    if let Some(back) = inodes.map.get(&b).map(|n| n.backing) {
                        if inodes.by_backing.get(&back) == Some(&b) {
                            inodes.by_backing.remove(&back);
                        }
                    }
                }
            }
        }
        reply.ok();
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (from, to) = match (self.path(ino.0), self.child(newparent.0, newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        // Two names of one placeholder would be hydrated apart: give them the content first.
        if let Err(e) = self.materialize(&from, false) {
            return reply.error(e);
        }
        match self.as_caller(req, || std::fs::hard_link(&from, &to)) {
            Ok(()) => self.entry(newparent.0, newname, &to, reply),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self
            .path(ino.0)
            .and_then(|p| self.open_path(ino.0, &p, flags.0))
        {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let path = match self.child(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let perm = mode & !umask & 0o7777;
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            // The kernel did not know the name: open what is there, as open(2) would.
            if flags & libc::O_EXCL != 0 {
                return reply.error(Errno::EEXIST);
            }
            let ino = self.intern(parent.0, name, &m);
            let r = self.open_path(ino, &path, flags).and_then(|fh| {
                std::fs::symlink_metadata(&path)
                    .map(|m| (fh, m))
                    .map_err(|e| io_errno(&e))
            });
            return match r {
                Ok((fh, m)) => {
                    let attr = self.attr(ino, &m, Some(&path));
                    reply.created(
                        &TTL,
                        &attr,
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    )
                }
                Err(e) => {
                    self.forget(req, INodeNo(ino), 1);
                    reply.error(e)
                }
            };
        }
        let mut opts = std::fs::OpenOptions::new();
        let acc = flags & libc::O_ACCMODE;
        opts.read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(true)
            .create(true)
            .truncate(flags & libc::O_TRUNC != 0)
            .mode(perm)
            .custom_flags(
                flags
                    & !(libc::O_ACCMODE
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_TRUNC
                        | libc::O_DIRECT
                        | libc::O_NOCTTY),
            );
        if flags & libc::O_EXCL != 0 {
            opts.create_new(true);
        }
        let f = match self.as_caller(req, || opts.open(&path)) {
            Ok(f) => f,
            Err(e) => return reply.error(io_errno(&e)),
        };
        let mut m = match f.metadata() {
            Ok(m) => m,
            Err(e) => return reply.error(io_errno(&e)),
        };
        let want = m.mode() & 0o7777 | (perm & self.umask);
        if want != m.mode() & 0o7777 {
            if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(want)) {
                return reply.error(io_errno(&e));
            }
            match f.metadata() {
                Ok(n) => m = n,
                Err(e) => return reply.error(io_errno(&e)),
            }
        }
        let ino = self.intern(parent.0, name, &m);
        let attr = self.attr(ino, &m, None);
        let fh = self.add_handle(ino, Handle::File(f));
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(fh),
            FopenFlags::empty(),
        );
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
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let local = |f: &File| {
            let mut buf = vec![0u8; size as usize];
            let mut n = 0;
            while n < buf.len() {
                match f.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_errno(&e)),
                }
            }
            buf.truncate(n);
            Ok(Box::new(buf) as Box<dyn AsRef<[u8]>>)
        };
        let r = match &*h {
            Handle::File(f) => local(f),
            Handle::Base {
                vfs_fh,
                file,
                st_ino,
            } => {
                if lock(&self.hydrated).contains(st_ino) {
                    local(file)
                } else {
                    let vfs = self.base.as_ref().expect("a base handle has a base");
                    vfs.read_blocking(*vfs_fh, offset, size)
                        .map(|b| Box::new(b) as Box<dyn AsRef<[u8]>>)
                        .map_err(|e| lib_errno("read", &e))
                }
            }
            Handle::Dir(_) => Err(Errno::EISDIR),
        };
        match r {
            Ok(d) => reply.data((*d).as_ref()),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        match &*h {
            Handle::File(f) => match f.write_all_at(data, offset) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(io_errno(&e)),
            },
            _ => reply.error(Errno::EBADF),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes reach the local file as they come; nothing is buffered here.
        reply.ok();
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
        if let Some((_, h)) = lock(&self.handles).remove(&fh.0) {
            if let (Handle::Base { vfs_fh, .. }, Some(vfs)) = (&*h, &self.base) {
                vfs.release(*vfs_fh);
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let r = match &*h {
            Handle::File(f) if datasync => f.sync_data(),
            Handle::File(f) => f.sync_all(),
            _ => Ok(()),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(io_errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let path = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let rd = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) => return reply.error(io_errno(&e)),
        };
        let mut entries = Vec::new();
        for e in rd.flatten() {
            let t = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                Ok(t) if t.is_file() => FileType::RegularFile,
                Ok(_) => match e.metadata() {
                    Ok(m) => kind(&m),
                    Err(_) => continue,
                },
                Err(_) => continue,
            };
            use std::os::unix::fs::DirEntryExt as _;
            entries.push((e.file_name(), t, e.ino()));
        }
        let fh = self.add_handle(ino.0, Handle::Dir(entries));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(entries) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        // Offsets: 1 is ".", 2 is "..", 3 + i follows entry i.
        if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 && reply.add(ino, 2, FileType::Directory, "..") {
            return reply.ok();
        }
        let from = offset.saturating_sub(2) as usize;
        for (i, (name, t, st_ino)) in entries.iter().enumerate().skip(from) {
            let known = {
                let inodes = lock(&self.inodes);
                inodes
                    .by_name
                    .get(&(ino.0, name.clone()))
                    .or_else(|| inodes.by_backing.get(&(self.dev, *st_ino)))
                    .copied()
            };
            // Entries not looked up yet get a stable number above the range of real inodes.
            let num = known.unwrap_or_else(|| {
                let h = blake3::hash(
                    [&ino.0.to_le_bytes()[..], name.as_bytes()]
                        .concat()
                        .as_slice(),
                );
                let mut b = [0u8; 8];
                b.copy_from_slice(&h.as_bytes()[..8]);
                u64::from_le_bytes(b) | (1 << 63)
            });
            if reply.add(INodeNo(num), i as u64 + 3, *t, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(entries) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        let dir = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if offset < 2 {
            let me = match std::fs::symlink_metadata(&dir) {
                Ok(m) => self.attr(ino.0, &m, None),
                Err(e) => return reply.error(io_errno(&e)),
            };
            if offset == 0 && reply.add(ino, 1, ".", &TTL, &me, Generation(0)) {
                return reply.ok();
            }
            if reply.add(ino, 2, "..", &TTL, &me, Generation(0)) {
                return reply.ok();
            }
        }
        let from = offset.saturating_sub(2) as usize;
        for (i, (name, _, _)) in entries.iter().enumerate().skip(from) {
            let path = if dir.as_os_str().len() + name.len() + 1 < LONG_PATH {
                LocalPath {
                    path: dir.join(name),
                    _dir: None,
                }
            } else {
                match self.child(ino.0, name) {
                    Ok(p) => p,
                    Err(_) => continue,
                }
            };
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue; // gone since opendir
            };
            let child = self.intern(ino.0, name, &m);
            let attr = self.attr(child, &m, Some(&path));
            if reply.add(
                INodeNo(child),
                i as u64 + 3,
                name,
                &TTL,
                &attr,
                Generation(0),
            ) {
                // Not taken: the kernel does not count it.
                self.forget(req, INodeNo(child), 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.path(ino.0).and_then(|p| {
            File::open(p)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_errno(&e))
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.root) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if name
            .as_bytes()
            .starts_with(placeholder::XATTR_PREFIX.as_bytes())
        {
            return reply.error(Errno::EPERM);
        }
        let r = self.path(ino.0).and_then(|p| {
            rustix::fs::lsetxattr(
                &*p,
                name,
                value,
                rustix::fs::XattrFlags::from_bits_retain(flags as u32),
            )
            .map_err(|e| Errno::from_i32(e.raw_os_error()))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if name
            .as_bytes()
            .starts_with(placeholder::XATTR_PREFIX.as_bytes())
        {
            return reply.error(Errno::NO_XATTR);
        }
        let path = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0u8; if size == 0 { 64 << 10 } else { size as usize }];
        match rustix::fs::lgetxattr(&*path, name, &mut buf[..]) {
            Ok(n) if size == 0 => reply.size(n as u32),
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let path = match self.path(ino.0) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0u8; 64 << 10];
        let n = match rustix::fs::llistxattr(&*path, &mut buf[..]) {
            Ok(n) => n,
            Err(e) => return reply.error(Errno::from_i32(e.raw_os_error())),
        };
        let shown: Vec<u8> = buf[..n]
            .split_inclusive(|&b| b == 0)
            .filter(|a| !a.starts_with(placeholder::XATTR_PREFIX.as_bytes()))
            .flatten()
            .copied()
            .collect();
        if size == 0 {
            reply.size(shown.len() as u32);
        } else if shown.len() > size as usize {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&shown);
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if name
            .as_bytes()
            .starts_with(placeholder::XATTR_PREFIX.as_bytes())
        {
            return reply.error(Errno::NO_XATTR);
        }
        let r = self.path(ino.0).and_then(|p| {
            rustix::fs::lremovexattr(&*p, name).map_err(|e| Errno::from_i32(e.raw_os_error()))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EBADF);
        };
        match rustix::fs::fallocate(
            f,
            rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
            offset,
            length,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }
}

/// Puts this thread's fsuid, fsgid and supplementary groups back when dropped.
struct RestoreCredentials<'a> {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: &'a [rustix::process::Gid],
}

impl Drop for RestoreCredentials<'_> {
    fn drop(&mut self) {
        nix::unistd::setfsuid(self.uid);
        nix::unistd::setfsgid(self.gid);
        let _ = rustix::thread::set_thread_groups(self.groups);
    }
}
