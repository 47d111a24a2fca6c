//! The mutable mount behaves like a local filesystem: the same sequences of operations, as root
//! and as other users (the operating thread's fsuid, fsgid and groups switched), run on a plain
//! local directory and inside a `datamon bundle mount new --allow-other`; every return code and
//! every lstat field a filesystem controls must match (inode numbers as equivalence classes,
//! times where the operation set them, ctime as "changed or not").

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rustix::fs::{Mode, OFlags, Timespec, Timestamps};

use crate::util::*;

/// (uid, gid) of the callers: root and two users without names.
const USERS: [(u32, u32); 3] = [(0, 0), (1000, 1000), (1001, 1001)];

/// The names every sequence works on, below a fresh case directory. `d` is a 0777 directory,
/// `s` a sticky 01777 one, `g` a setgid 02775 one owned by 1000:1001.
const NAMES: [&str; 10] = ["a", "b", "d", "d/a", "d/b", "s", "s/a", "s/b", "g", "g/a"];

#[derive(Debug, Clone)]
enum Op {
    Create(usize, u32),
    Append(usize, usize),
    Mkdir(usize, u32),
    Link(usize, usize),
    Symlink(usize),
    Rename(usize, usize),
    Unlink(usize),
    Rmdir(usize),
    Chmod(usize, u32),
    Chown(usize, usize),
    Truncate(usize, u64),
    OpenTrunc(usize),
    /// 0 fifo, 1 character device, 2 block device, 3 socket.
    Mknod(usize, u8),
    /// 0: both times given; 1: atime omitted; 2: mtime now, atime given; 3: both now.
    Utimens(usize, u8, i64),
}

#[derive(Debug, Clone)]
struct Step {
    user: usize,
    op: Op,
}

fn step(user: usize, op: Op) -> Step {
    Step { user, op }
}

/// Runs `f` on a thread with `user`'s fsuid, fsgid and groups.
fn as_user<R: Send>(user: usize, f: impl FnOnce() -> R + Send) -> R {
    let (uid, gid) = USERS[user];
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::set_thread_groups(&[rustix::process::Gid::from_raw(gid)])
                .expect("setgroups");
            nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
            f()
        })
        .join()
        .expect("operation thread")
    })
}

/// Runs `op` below `root`; returns the errno (0: success).
fn apply(root: &Path, s: &Step) -> i32 {
    let p = |i: usize| root.join(NAMES[i]);
    // Device nodes cannot be opened in the mount (it is `nodev`): not compared.
    if let Op::Append(a, _) | Op::OpenTrunc(a) = s.op {
        use std::os::unix::fs::FileTypeExt as _;
        if std::fs::metadata(p(a))
            .is_ok_and(|m| m.file_type().is_char_device() || m.file_type().is_block_device())
        {
            return -1;
        }
    }
    let r: rustix::io::Result<()> = as_user(s.user, || match s.op {
        Op::Create(a, mode) => rustix::fs::open(
            p(a),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map(drop),
        Op::Append(a, n) => rustix::fs::open(
            p(a),
            OFlags::WRONLY | OFlags::APPEND | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .and_then(|fd| rustix::io::write(&fd, &vec![b'x'; n]).map(drop)),
        Op::Mkdir(a, mode) => rustix::fs::mkdir(p(a), Mode::from_raw_mode(mode)),
        Op::Link(a, b) => rustix::fs::link(p(a), p(b)),
        Op::Symlink(a) => rustix::fs::symlink("target", p(a)),
        Op::Rename(a, b) => rustix::fs::rename(p(a), p(b)),
        Op::Unlink(a) => rustix::fs::unlink(p(a)),
        Op::Rmdir(a) => rustix::fs::rmdir(p(a)),
        Op::Chmod(a, mode) => rustix::fs::chmod(p(a), Mode::from_raw_mode(mode)),
        Op::Chown(a, u) => rustix::fs::chownat(
            rustix::fs::CWD,
            p(a),
            Some(rustix::fs::Uid::from_raw(USERS[u].0)),
            Some(rustix::fs::Gid::from_raw(USERS[u].1)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ),
        Op::Truncate(a, n) => nix::unistd::truncate(&p(a), n as i64)
            .map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32)),
        Op::OpenTrunc(a) => rustix::fs::open(
            p(a),
            OFlags::WRONLY | OFlags::TRUNC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map(drop),
        Op::Mknod(a, k) => {
            let (t, dev) = match k {
                0 => (rustix::fs::FileType::Fifo, 0),
                1 => (
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::makedev(1, 3),
                ),
                2 => (
                    rustix::fs::FileType::BlockDevice,
                    rustix::fs::makedev(7, 200),
                ),
                _ => (rustix::fs::FileType::Socket, 0),
            };
            rustix::fs::mknodat(rustix::fs::CWD, p(a), t, Mode::from_raw_mode(0o640), dev)
        }
        Op::Utimens(a, how, sec) => {
            let at = |s: i64| Timespec {
                tv_sec: s,
                tv_nsec: 123_456_789,
            };
            let now = Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            };
            let omit = Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            };
            let (atime, mtime) = match how {
                0 => (at(sec), at(sec + 1)),
                1 => (omit, at(sec)),
                2 => (at(sec), now),
                _ => (now, now),
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                p(a),
                &Timestamps {
                    last_access: atime,
                    last_modification: mtime,
                },
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
        }
    });
    match r {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    }
}

/// What lstat shows of a name that the filesystem controls. Inode numbers are replaced by the
/// index of the first name with the same number.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Seen {
    Missing(i32),
    Entry {
        mode: u32,
        nlink: u64,
        uid: u32,
        gid: u32,
        size: Option<u64>,
        rdev: u64,
        same_as: usize,
        target: Option<PathBuf>,
    },
}

fn snapshot(root: &Path) -> (Vec<Seen>, Vec<Option<std::fs::Metadata>>) {
    let metas: Vec<_> = NAMES
        .iter()
        .map(|n| std::fs::symlink_metadata(root.join(n)))
        .collect();
    let seen = metas
        .iter()
        .enumerate()
        .map(|(i, m)| match m {
            Err(e) => Seen::Missing(e.raw_os_error().unwrap_or(-1)),
            Ok(m) => Seen::Entry {
                mode: m.mode(),
                nlink: m.nlink(),
                uid: m.uid(),
                gid: m.gid(),
                // A directory's size is its block count on ext4: where entries were.
                size: (!m.is_dir()).then_some(m.len()),
                rdev: m.rdev(),
                same_as: metas
                    .iter()
                    .position(|o| o.as_ref().is_ok_and(|o| o.ino() == m.ino()))
                    .unwrap_or(i),
                target: m
                    .file_type()
                    .is_symlink()
                    .then(|| std::fs::read_link(root.join(NAMES[i])).expect("readlink")),
            },
        })
        .collect();
    (seen, metas.into_iter().map(Result::ok).collect())
}

/// The sorted listing of the case directory and its subdirectories.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in ["", "d", "s", "g"] {
        if let Ok(rd) = std::fs::read_dir(root.join(d)) {
            for e in rd.flatten() {
                out.push(format!("{d}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

/// The two trees under test.
struct Trees {
    local: PathBuf,
    mounted: PathBuf,
    case: usize,
}

impl Trees {
    /// A fresh case directory in both trees, with `d`, `s` and `g` (see [`NAMES`]).
    fn fresh(&mut self) -> (PathBuf, PathBuf) {
        self.case += 1;
        let mut out = Vec::new();
        for root in [&self.local, &self.mounted] {
            let c = root.join(format!("case{}", self.case));
            std::fs::create_dir(&c).expect("case dir");
            std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o777)).expect("chmod");
            for (d, mode) in [("d", 0o777), ("s", 0o1777), ("g", 0o2775)] {
                std::fs::create_dir(c.join(d)).expect("mkdir");
                std::fs::set_permissions(c.join(d), std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
            std::os::unix::fs::chown(c.join("g"), Some(1000), Some(1001)).expect("chown");
            out.push(c);
        }
        let m = out.pop().expect("two");
        (out.pop().expect("two"), m)
    }

    /// Runs `steps` in a fresh case directory of both trees and compares after every step.
    fn check(&mut self, steps: &[Step]) -> Result<(), String> {
        let (local, mounted) = self.fresh();
        let mut before = (snapshot(&local).1, snapshot(&mounted).1);
        for (i, s) in steps.iter().enumerate() {
            // Let the clock move (more than one 4 ms kernel tick), so a ctime the step sets
            // differs from the one before.
            std::thread::sleep(Duration::from_millis(10));
            let rl = apply(&local, s);
            let rm = apply(&mounted, s);
            let ctx = || format!("step {i} {s:?} of {steps:#?}");
            if rl != rm {
                return Err(format!(
                    "{}: local errno {rl} ({}), mount errno {rm} ({})",
                    ctx(),
                    std::io::Error::from_raw_os_error(rl),
                    std::io::Error::from_raw_os_error(rm)
                ));
            }
            let (sl, ml) = snapshot(&local);
            let (sm, mm) = snapshot(&mounted);
            for (n, name) in NAMES.iter().enumerate() {
                if sl[n] != sm[n] {
                    return Err(format!(
                        "{}: lstat {name}: local {:?}, mount {:?}",
                        ctx(),
                        sl[n],
                        sm[n]
                    ));
                }
                let changed =
                    |b: &Option<std::fs::Metadata>, a: &Option<std::fs::Metadata>| match (b, a) {
                        (Some(b), Some(a)) => {
                            (b.ctime(), b.ctime_nsec()) != (a.ctime(), a.ctime_nsec())
                        }
                        _ => false,
                    };
                let (cl, cm) = (changed(&before.0[n], &ml[n]), changed(&before.1[n], &mm[n]));
                if cl != cm {
                    return Err(format!(
                        "{}: ctime of {name} changed locally: {cl}, in the mount: {cm}",
                        ctx()
                    ));
                }
            }
            if let (Op::Utimens(a, how, _), 0) = (&s.op, rl) {
                let (l, m) = (ml[*a].as_ref(), mm[*a].as_ref());
                if let (Some(l), Some(m)) = (l, m) {
                    let t = |m: &std::fs::Metadata| {
                        (m.mtime(), m.mtime_nsec(), m.atime(), m.atime_nsec())
                    };
                    let (tl, tm) = (t(l), t(m));
                    let same = match how {
                        0 => tl == tm,
                        1 => (tl.0, tl.1) == (tm.0, tm.1),
                        2 => (tl.2, tl.3) == (tm.2, tm.3),
                        _ => true,
                    };
                    if !same {
                        return Err(format!("{}: times local {tl:?}, mount {tm:?}", ctx()));
                    }
                }
            }
            let (ll, lm) = (listing(&local), listing(&mounted));
            if ll != lm {
                return Err(format!("{}: listing local {ll:?}, mount {lm:?}", ctx()));
            }
            before = (ml, mm);
        }
        Ok(())
    }
}

fn with_trees(f: impl FnOnce(&mut Trees)) {
    if !fuse_available() {
        return;
    }
    let dm = Dm::new();
    // Other users reach both trees.
    std::fs::set_permissions(dm.root(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dm.create_repo("r");
    let local = dm.path("local");
    std::fs::create_dir(&local).expect("local dir");
    let mnt = dm.path("work");
    let mount = dm.mount_new(
        &mnt,
        &["--repo", "r", "--message", "posix", "--allow-other"],
    );
    let mut trees = Trees {
        local,
        mounted: mnt.clone(),
        case: 0,
    };
    f(&mut trees);
    drop(mount);
    umount_lazily(&mnt);
}

use Op::*;

/// Hand-written sequences, one class of the issue each.
fn sequences() -> Vec<(&'static str, Vec<Step>)> {
    let (a, b, d, da, db, s, sa, sb, g, ga) = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    vec![
        (
            "hard links share an inode through renames and unlinks",
            vec![
                step(0, Create(a, 0o644)),
                step(0, Link(a, b)),
                step(0, Append(b, 10)),
                step(0, Rename(b, da)),
                step(0, Link(da, db)),
                step(0, Unlink(a)),
                step(0, Rename(db, da)),
                step(0, Unlink(da)),
                step(0, Link(db, a)),
            ],
        ),
        (
            "hard links of fifos, sockets and devices",
            vec![
                step(0, Mknod(a, 0)),
                step(0, Link(a, b)),
                step(0, Mknod(da, 1)),
                step(0, Link(da, db)),
                step(0, Unlink(da)),
                step(0, Mknod(sa, 2)),
                step(0, Mknod(sb, 3)),
                step(0, Link(sb, ga)),
                step(0, Symlink(da)),
                step(0, Link(da, a)),
            ],
        ),
        (
            "other users: creation, ownership, chmod, setgid",
            vec![
                step(1, Create(da, 0o644)),
                step(2, Chmod(da, 0o600)),
                step(1, Chmod(da, 0o2755)),
                step(2, Create(ga, 0o2755)),
                step(1, Chmod(ga, 0o644)),
                step(2, Mkdir(db, 0o755)),
                step(1, Mkdir(b, 0o755)),
                step(2, Chown(da, 2)),
                step(1, Chown(da, 1)),
                step(0, Chown(da, 2)),
                step(2, Mkdir(ga, 0o777)),
                step(2, Rename(ga, db)),
            ],
        ),
        (
            "sticky directories and write permission",
            vec![
                step(1, Create(sa, 0o666)),
                step(2, Unlink(sa)),
                step(2, Rename(sa, sb)),
                step(2, Create(sb, 0o644)),
                step(1, Rename(sa, sb)),
                step(1, Truncate(sb, 0)),
                step(1, OpenTrunc(sb)),
                step(2, Truncate(sb, 3)),
                step(2, Append(sa, 3)),
                step(2, Truncate(sa, 1)),
                step(0, Unlink(sb)),
                step(1, Mkdir(d, 0o755)),
            ],
        ),
        (
            "special files and times",
            vec![
                step(0, Mknod(a, 0)),
                step(0, Mknod(b, 3)),
                step(0, Mknod(da, 1)),
                step(0, Utimens(a, 0, 1_000_000)),
                step(0, Utimens(a, 1, 2_000_000)),
                step(0, Utimens(a, 2, 3_000_000)),
                step(0, Utimens(b, 3, 0)),
                step(1, Utimens(da, 3, 0)),
                step(1, Utimens(da, 0, 5)),
                step(0, Chmod(da, 0o600)),
                step(0, Chown(da, 1)),
                step(1, Utimens(da, 3, 0)),
            ],
        ),
        (
            "renames of directories and the errors ext4 gives",
            vec![
                step(0, Mkdir(a, 0o755)),
                step(0, Mkdir(b, 0o755)),
                step(0, Rename(a, b)),
                step(0, Create(da, 0o644)),
                step(0, Rename(b, d)),
                step(0, Rename(da, s)),
                step(0, Rename(s, da)),
                step(0, Rmdir(d)),
                step(0, Unlink(d)),
                step(0, Rmdir(da)),
                step(0, Mkdir(db, 0o700)),
                step(0, Rename(d, db)),
                step(0, Create(a, 0o644)),
                step(0, Create(ga, 0o644)),
                step(0, Rename(g, a)),
            ],
        ),
    ]
}

#[test]
fn mutable_mount_posix_sequences_match_a_local_directory() {
    with_trees(|trees| {
        for (what, steps) in sequences() {
            if let Err(e) = trees.check(&steps) {
                panic!("{what}: {e}");
            }
        }
    });
}

fn arb_step() -> impl Strategy<Value = Step> {
    let n = 0..NAMES.len();
    let mode = prop_oneof![
        Just(0o644u32),
        Just(0o600),
        Just(0o755),
        Just(0o777),
        Just(0o2755),
        Just(0o4755),
        Just(0o1777),
        Just(0o000),
    ];
    let op = prop_oneof![
        (n.clone(), mode.clone()).prop_map(|(a, m)| Create(a, m)),
        (n.clone(), 1..100usize).prop_map(|(a, k)| Append(a, k)),
        (n.clone(), mode.clone()).prop_map(|(a, m)| Mkdir(a, m)),
        (n.clone(), n.clone()).prop_map(|(a, b)| Link(a, b)),
        n.clone().prop_map(Symlink),
        (n.clone(), n.clone()).prop_map(|(a, b)| Rename(a, b)),
        n.clone().prop_map(Unlink),
        n.clone().prop_map(Rmdir),
        (n.clone(), mode).prop_map(|(a, m)| Chmod(a, m)),
        (n.clone(), 0..USERS.len()).prop_map(|(a, u)| Chown(a, u)),
        (n.clone(), 0..5000u64).prop_map(|(a, k)| Truncate(a, k)),
        n.clone().prop_map(OpenTrunc),
        (n.clone(), 0..4u8).prop_map(|(a, k)| Mknod(a, k)),
        (n, 0..4u8, 0..2_000_000_000i64).prop_map(|(a, h, t)| Utimens(a, h, t)),
    ];
    (0..USERS.len(), op).prop_map(|(user, op)| Step { user, op })
}

#[test]
fn mutable_mount_generated_sequences_match_a_local_directory() {
    with_trees(|trees| {
        let cases = std::env::var("DATAMON_POSIX_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(48);
        let config = Config {
            cases,
            max_shrink_iters: 100,
            failure_persistence: None,
            ..Config::default()
        };
        // The same sequences on every run, so a failure in CI is reproducible;
        // DATAMON_POSIX_RANDOM=1 explores new ones.
        let mut runner = if std::env::var_os("DATAMON_POSIX_RANDOM").is_some() {
            TestRunner::new(config)
        } else {
            TestRunner::new_with_rng(
                config,
                proptest::test_runner::TestRng::deterministic_rng(
                    proptest::test_runner::RngAlgorithm::ChaCha,
                ),
            )
        };
        let trees = std::cell::RefCell::new(trees);
        let r = runner.run(&prop::collection::vec(arb_step(), 1..16), |steps| {
            trees
                .borrow_mut()
                .check(&steps)
                .map_err(TestCaseError::fail)
        });
        if let Err(e) = r {
            panic!("{e}");
        }
    });
}

/// Paths that are valid from the caller's side but longer than PATH_MAX once the work tree's
/// folder is put in front: a chain of 255-byte names.
#[test]
fn mutable_mount_long_paths_match_a_local_directory() {
    with_trees(|trees| {
        let (local, mounted) = trees.fresh();
        // As long as the caller's paths may be (about 4,085 bytes), deeper than what the work
        // tree's folder leaves.
        let base = local.as_os_str().len().max(mounted.as_os_str().len());
        let depth = (4085 - base - 40) / 256;
        let n = (4085 - base - depth * 256 - 1).min(255);
        let run = |root: &Path| -> Vec<String> {
            let mut out = Vec::new();
            let mut dir = root.to_owned();
            for i in 0..depth as u8 {
                dir.push(std::iter::repeat_n(char::from(b'a' + i), 255).collect::<String>());
                out.push(format!(
                    "mkdir {:?}",
                    std::fs::create_dir(&dir).map_err(|e| e.kind())
                ));
            }
            let file = dir.join("f".repeat(n));
            let other = dir.join("g".repeat(n));
            let r = std::fs::write(&file, b"content").map_err(|e| e.kind());
            out.push(format!("create {r:?}"));
            let r = std::fs::hard_link(&file, &other).map_err(|e| e.kind());
            out.push(format!("link {r:?}"));
            let st = |p: &Path| {
                std::fs::symlink_metadata(p)
                    .map(|m| (m.len(), m.nlink(), m.mode()))
                    .map_err(|e| e.kind())
            };
            let ino = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.ino()).ok();
            out.push(format!("stat {:?} {:?}", st(&file), st(&other)));
            out.push(format!(
                "same inode {}",
                ino(&file).is_some() && ino(&file) == ino(&other)
            ));
            let renamed = dir.join("h".repeat(n));
            let r = std::fs::rename(&file, &renamed).map_err(|e| e.kind());
            out.push(format!("rename {r:?} {:?}", st(&renamed)));
            let r = std::fs::read(&renamed).map_err(|e| e.kind());
            out.push(format!("read {r:?}"));
            let r = std::fs::set_permissions(&renamed, std::fs::Permissions::from_mode(0o600));
            out.push(format!(
                "chmod {:?} {:?}",
                r.map_err(|e| e.kind()),
                st(&other)
            ));
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            names.sort();
            out.push(format!("list {names:?}"));
            for p in [&renamed, &other] {
                out.push(format!(
                    "unlink {:?}",
                    std::fs::remove_file(p).map_err(|e| e.kind())
                ));
            }
            while dir != root {
                out.push(format!(
                    "rmdir {:?}",
                    std::fs::remove_dir(&dir).map_err(|e| e.kind())
                ));
                dir.pop();
            }
            out
        };
        let (l, m) = (run(&local), run(&mounted));
        assert!(
            l.iter().all(|s| !s.contains("Err")),
            "the local directory refused: {l:#?}"
        );
        assert_eq!(l, m, "local, then mount");
    });
}
