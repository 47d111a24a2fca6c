//! Deterministic folders of random files, and comparing folders.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};

/// Writes `files` files of pseudo-random (incompressible) content under `dir`, spread over a
/// few subfolders, sizes between 0 and `max_size`; returns the total bytes written.
pub fn write_random_tree(dir: &Path, seed: u64, files: usize, max_size: usize) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut total = 0;
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&sub).expect("create a folder");
        let len = rng.random_range(0..=max_size);
        let mut v = vec![0u8; len];
        rng.fill(&mut v[..]);
        std::fs::write(sub.join(format!("f{i:04}.bin")), &v).expect("write a file");
        total += len as u64;
    }
    total
}

/// Every regular file under `dir` (relative path -> content).
pub fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read a folder") {
            let e = e.expect("a folder entry");
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("under the root")
                    .display()
                    .to_string();
                out.insert(rel, std::fs::read(&p).expect("read a file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Panics unless the two folders hold the same files with the same content.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (read_tree(a), read_tree(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "file lists differ"
    );
    for (k, v) in &ta {
        assert!(tb[k] == *v, "{k} differs");
    }
}
