#!/usr/bin/env python3
"""Deterministic benchmark dataset generator for datamon (stdlib only).

Usage:
    gen_dataset.py --preset {large,small,tiny} --out DIR [--seed N] [--force]

Creates DIR/v1 and DIR/v2. v2 starts as an independent copy of v1
(`cp -a --reflink=auto`) and then gets a preset-specific set of changes.
If DIR/.done-<preset> exists, nothing is generated (use --force to redo).

Presets
  large  ~2 GiB: ~15,000 random binary files of 20-200 KB in 150 dirs,
         40 CSV files of 1-10 MB, 3 large random files (100/200/400 MiB).
         v2: 1% of small files rewritten, 3% added, 1% deleted, rows appended
         to every CSV, 1,800 scattered 4 KiB overwrites in the 400 MiB file,
         one 4 KiB insertion at ~1 MiB in the 200 MiB file.
  small  ~600 MB: 100,000 files of 0.5-16 KB in ~1,000 dirs (half random
         bytes, half text). v2: 0.5% rewritten, 1% added, 0.5% deleted and one
         directory of 500 files renamed.
  tiny   ~60 MB, same shape as `large` with scaled-down counts and sizes.

Everything derives from one random.Random(seed), so the output is
byte-identical across runs and machines (file mtimes are not).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import subprocess
import sys
import time

KiB = 1024
MiB = 1024 * KiB
BLOCK = 256 * KiB  # randbytes is fastest around this size

PRESETS = {
    "large": dict(
        kind="mixed",
        top_dirs=10, sub_dirs=15,            # 150 dirs
        n_small=15_000, small_min=20_000, small_max=200_000,
        n_csv=40, csv_min=1_000_000, csv_max=10_000_000,
        big_sizes=[100 * MiB, 200 * MiB, 400 * MiB],
        change_frac=0.01, add_frac=0.03, delete_frac=0.01,
        csv_append_frac=(0.01, 0.05),
        overwrites=1800, insert_offset=1 * MiB,
    ),
    "tiny": dict(
        kind="mixed",
        top_dirs=4, sub_dirs=5,              # 20 dirs
        n_small=600, small_min=8_000, small_max=80_000,
        n_csv=8, csv_min=300_000, csv_max=2_000_000,
        big_sizes=[6 * MiB, 10 * MiB, 16 * MiB],
        change_frac=0.01, add_frac=0.03, delete_frac=0.01,
        csv_append_frac=(0.01, 0.05),
        overwrites=60, insert_offset=1 * MiB,
    ),
    "small": dict(
        kind="many",
        top_dirs=32, sub_dirs=31,            # 992 dirs (+1 dir of 500 to move)
        n_files=100_000, file_min=512, file_max=16 * KiB,
        moved_dir_files=500,
        change_frac=0.005, add_frac=0.01, delete_frac=0.005,
    ),
}


# ---------------------------------------------------------------- helpers

def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def write_random(rng: random.Random, path: str, size: int) -> None:
    with open(path, "wb", buffering=0) as f:
        left = size
        while left > 0:
            n = min(BLOCK, left)
            f.write(rng.randbytes(n))
            left -= n


def make_words(rng: random.Random, n: int) -> list[str]:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 7.5, 7, 6.7, 6.3, 6, 6, 4.3, 4, 2.8, 2.8, 2.4, 2.4,
               2.2, 2, 2, 1.9, 1.5, 1, 0.8, 0.2, 0.2, 0.1, 0.1]
    words = set()
    while len(words) < n:
        k = max(1, int(rng.gauss(5.5, 2.5)))
        words.add("".join(rng.choices(letters, weights, k=k)))
    return sorted(words)


class TextSource:
    """Text-ish content: lines of pseudo-words drawn from a fixed line pool."""

    def __init__(self, rng: random.Random, n_lines: int = 20_000):
        words = make_words(rng, 3000)
        # Zipf-ish word weights so that text compresses like real prose.
        wweights = [1.0 / (i + 1) for i in range(len(words))]
        self.lines = []
        for _ in range(n_lines):
            k = rng.randint(3, 14)
            line = " ".join(rng.choices(words, wweights, k=k))
            if rng.random() < 0.3:
                line = line.capitalize() + "."
            self.lines.append(line)

    def make(self, rng: random.Random, size: int) -> bytes:
        # ~45 bytes per line on average; overshoot then cut.
        k = size // 30 + 2
        s = "\n".join(rng.choices(self.lines, k=k)).encode()
        while len(s) < size:  # practically never
            s += b"\n" + "\n".join(rng.choices(self.lines, k=k)).encode()
        return s[:size - 1] + b"\n"


class CsvSource:
    """Realistic compressible CSV rows: id, timestamp, floats, categories."""

    HEADER = "id,timestamp,sensor,region,status,value,score,lat,lon,comment\n"

    def __init__(self, rng: random.Random, pool: int = 30_000):
        sensors = [f"sensor-{i:04d}" for i in range(400)]
        regions = ["us-east", "us-west", "eu-central", "eu-west", "ap-south",
                   "ap-northeast", "sa-east", "af-south"]
        status = ["ok", "ok", "ok", "ok", "warn", "error", "maintenance"]
        comments = ["", "", "", "recalibrated", "manual check", "battery low",
                    "firmware 2.1.7", "outlier removed", "\"needs, review\""]
        self.suffixes = []
        for _ in range(pool):
            self.suffixes.append(
                f"{rng.choice(sensors)},{rng.choice(regions)},"
                f"{rng.choice(status)},{rng.gauss(20, 8):.4f},"
                f"{rng.random():.6f},{rng.uniform(-90, 90):.5f},"
                f"{rng.uniform(-180, 180):.5f},{rng.choice(comments)}")
        # id + timestamp + commas + newline add ~24 bytes to the suffix
        self.avg_row = sum(map(len, self.suffixes)) / pool + 24

    def rows(self, rng: random.Random, first_id: int, nbytes: int) -> tuple[bytes, int]:
        """Return (text, next_id) of whole rows totalling about nbytes."""
        out = []
        total = 0
        rid = first_id
        while total < nbytes:
            n = max(1, min(20_000, int((nbytes - total) / self.avg_row) + 1))
            picks = rng.choices(self.suffixes, k=n)
            ts0 = 1_700_000_000 + rid * 7
            block = "".join(f"{rid + i},{ts0 + i * 7},{s}\n"
                            for i, s in enumerate(picks))
            b = block.encode()
            out.append(b)
            total += len(b)
            rid += n
        return b"".join(out), rid


def tree_stats(root: str) -> tuple[int, int, int]:
    files = dirs = size = 0
    for dp, dns, fns in os.walk(root):
        dirs += len(dns)
        for fn in fns:
            files += 1
            size += os.lstat(os.path.join(dp, fn)).st_size
    return files, dirs, size


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def copy_tree(src: str, dst: str) -> None:
    # Independent files: reflink where the fs supports it, full copy otherwise.
    subprocess.run(["cp", "-a", "--reflink=auto", src, dst], check=True)


def pick_disjoint(rng: random.Random, items: list, counts: list[int]) -> list[list]:
    chosen = rng.sample(items, sum(counts))
    out, i = [], 0
    for c in counts:
        out.append(chosen[i:i + c])
        i += c
    return out


# ---------------------------------------------------------------- "mixed"

def gen_mixed(p: dict, out: str, rng: random.Random) -> None:
    v1 = os.path.join(out, "v1")
    dirs = [os.path.join("files", f"group{t:02d}", f"part{s:02d}")
            for t in range(p["top_dirs"]) for s in range(p["sub_dirs"])]
    for d in dirs:
        os.makedirs(os.path.join(v1, d), exist_ok=True)
    os.makedirs(os.path.join(v1, "tables"), exist_ok=True)
    os.makedirs(os.path.join(v1, "blobs"), exist_ok=True)

    # small random binary files
    small = []
    for i in range(p["n_small"]):
        rel = os.path.join(rng.choice(dirs), f"obj{i:06d}.bin")
        write_random(rng, os.path.join(v1, rel),
                     log_uniform(rng, p["small_min"], p["small_max"]))
        small.append(rel)

    # CSVs
    csv = CsvSource(rng)
    csv_next_id = {}
    for i in range(p["n_csv"]):
        rel = os.path.join("tables", f"measurements_{i:03d}.csv")
        body, nxt = csv.rows(rng, 1, log_uniform(rng, p["csv_min"], p["csv_max"]))
        with open(os.path.join(v1, rel), "wb") as f:
            f.write(CsvSource.HEADER.encode())
            f.write(body)
        csv_next_id[rel] = nxt

    # big random files
    bigs = []
    for i, size in enumerate(p["big_sizes"]):
        rel = os.path.join("blobs", f"large{i}.dat")
        write_random(rng, os.path.join(v1, rel), size)
        bigs.append((rel, size))

    # ---- v2
    v2 = os.path.join(out, "v2")
    copy_tree(v1, v2)
    n = len(small)
    changed, deleted = pick_disjoint(
        rng, small, [round(n * p["change_frac"]), round(n * p["delete_frac"])])
    for rel in changed:
        path = os.path.join(v2, rel)
        size = os.path.getsize(path)
        os.unlink(path)  # new inode, never touch v1 even if hard-linked
        write_random(rng, path, size)
    for rel in deleted:
        os.unlink(os.path.join(v2, rel))
    for j in range(round(n * p["add_frac"])):
        rel = os.path.join(rng.choice(dirs), f"new{j:06d}.bin")
        write_random(rng, os.path.join(v2, rel),
                     log_uniform(rng, p["small_min"], p["small_max"]))

    for rel, nxt in csv_next_id.items():
        path = os.path.join(v2, rel)
        frac = rng.uniform(*p["csv_append_frac"])
        body, _ = csv.rows(rng, nxt, int(os.path.getsize(path) * frac))
        with open(path, "ab") as f:
            f.write(body)

    # scattered 4 KiB overwrites in the largest file
    rel, size = max(bigs, key=lambda b: b[1])
    path = os.path.join(v2, rel)
    nblocks = size // (4 * KiB)
    with open(path, "r+b", buffering=0) as f:
        for blk in sorted(rng.sample(range(nblocks), p["overwrites"])):
            f.seek(blk * 4 * KiB)
            f.write(rng.randbytes(4 * KiB))

    # one 4 KiB insertion near the start of the second-largest file
    rel, size = sorted(bigs, key=lambda b: b[1])[-2]
    path = os.path.join(v2, rel)
    tmp = path + ".tmp"
    off = p["insert_offset"] + rng.randrange(4 * KiB)
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(src.read(off))
        dst.write(rng.randbytes(4 * KiB))
        shutil.copyfileobj(src, dst, 8 * MiB)
    shutil.copystat(path, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- "many"

def small_file_size(rng: random.Random, lo: int, hi: int) -> int:
    # half log-uniform, half uniform: mean ~6.4 KB for 0.5-16 KiB
    if rng.random() < 0.5:
        return log_uniform(rng, lo, hi)
    return rng.randint(lo, hi)


def gen_many(p: dict, out: str, rng: random.Random) -> None:
    v1 = os.path.join(out, "v1")
    text = TextSource(rng)
    dirs = [os.path.join(f"shard{t:02d}", f"dir{s:03d}")
            for t in range(p["top_dirs"]) for s in range(p["sub_dirs"])]
    move_dir = os.path.join("shard00", "to_be_renamed")
    for d in dirs + [move_dir]:
        os.makedirs(os.path.join(v1, d), exist_ok=True)

    def write_one(path: str) -> None:
        size = small_file_size(rng, p["file_min"], p["file_max"])
        if rng.random() < 0.5:
            data = rng.randbytes(size)
        else:
            data = text.make(rng, size)
        with open(path, "wb", buffering=0) as f:
            f.write(data)

    files = []
    n_move = p["moved_dir_files"]
    for i in range(p["n_files"]):
        if i < n_move:
            rel = os.path.join(move_dir, f"f{i:06d}.dat")
        else:
            ext = ".bin" if i % 2 else ".txt"
            rel = os.path.join(rng.choice(dirs), f"f{i:06d}{ext}")
        write_one(os.path.join(v1, rel))
        files.append(rel)

    v2 = os.path.join(out, "v2")
    copy_tree(v1, v2)
    others = files[n_move:]
    n = len(files)
    changed, deleted = pick_disjoint(
        rng, others, [round(n * p["change_frac"]), round(n * p["delete_frac"])])
    for rel in changed:
        path = os.path.join(v2, rel)
        os.unlink(path)
        write_one(path)
    for rel in deleted:
        os.unlink(os.path.join(v2, rel))
    for j in range(round(n * p["add_frac"])):
        write_one(os.path.join(v2, rng.choice(dirs), f"new{j:06d}.dat"))
    os.rename(os.path.join(v2, move_dir),
              os.path.join(v2, "shard31", "renamed_dir"))


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--force", action="store_true", help="regenerate even if done")
    a = ap.parse_args()

    out = os.path.abspath(a.out)
    done = os.path.join(out, f".done-{a.preset}")
    v1, v2 = os.path.join(out, "v1"), os.path.join(out, "v2")
    if os.path.exists(done) and not a.force:
        print(f"dataset '{a.preset}' already present in {out} (remove {done} to regenerate)")
    else:
        for d in (v1, v2):
            if os.path.lexists(d):
                shutil.rmtree(d)
        for f in os.listdir(out) if os.path.isdir(out) else []:
            if f.startswith(".done-"):
                os.unlink(os.path.join(out, f))
        os.makedirs(out, exist_ok=True)
        p = PRESETS[a.preset]
        rng = random.Random(f"{a.seed}:{a.preset}")
        t0 = time.monotonic()
        (gen_mixed if p["kind"] == "mixed" else gen_many)(p, out, rng)
        os.sync()
        with open(done, "w") as f:
            f.write(f"preset={a.preset} seed={a.seed}\n")
        print(f"generated preset '{a.preset}' in {time.monotonic() - t0:.1f} s")

    for name, d in (("v1", v1), ("v2", v2)):
        files, dirs, size = tree_stats(d)
        print(f"{name}: {files} files, {dirs} dirs, {size} bytes ({human(size)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
