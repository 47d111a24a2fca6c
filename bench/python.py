#!/usr/bin/env python3
"""The Python SDK's performance numbers (issue 10), on a local directory store:

1. reading a 1 GiB file with ``bundle.open(path).read()`` vs ``datamon bundle download file``
   of the same file from the same store, cold (empty chunk cache; page cache dropped when
   permitted) and warm;
2. listing the entries of the 100,000-file bundle (``bench/data/small/v1``) from Python;
3. ``pandas.read_csv`` of a 200 MB CSV through ``datamon://`` vs from a local file (warm).

Run through ``bench/python.sh`` (which installs the package); prints a Markdown report.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datamon

GiB = 1 << 30
ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("BENCH_WORK", ROOT / "target" / "bench-python"))
CLI = os.environ.get("DATAMON_BIN", str(ROOT / "target" / "release" / "datamon"))
SMALL = Path(os.environ.get("BENCH_SMALL", ROOT / "bench" / "data" / "small" / "v1"))


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(f):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    home = WORK / "home"
    os.environ["DATAMON_HOME"] = str(home)
    url = f"file://{WORK / 'store'}"
    dm = datamon.open(url)
    rows = []

    # 1. One 1 GiB file.
    big = WORK / "big"
    big.mkdir()
    log("writing a 1 GiB file")
    with open(big / "big.bin", "wb") as f:
        for _ in range(GiB // (8 << 20)):
            f.write(os.urandom(8 << 20))
    dm.create_repo("big")
    t, b = timed(lambda: dm.upload("big", big, "1 GiB"))
    log(f"upload 1 GiB: {t:.1f} s")
    shutil.rmtree(big)

    def cli_download() -> float:
        dest = WORK / "dl"
        shutil.rmtree(dest, ignore_errors=True)
        t, _ = timed(lambda: subprocess.run(
            [CLI, "bundle", "download", "file", "--repo", "big", "--bundle", b.id,
             "--file", "big.bin", "--destination", str(dest), "--store", url, "-q"],
            check=True))
        shutil.rmtree(dest, ignore_errors=True)
        return t

    def py_read() -> float:
        fresh = datamon.open(url)  # a new process would do the same: vfs opened afresh
        bb = fresh.bundle("big", b.id)
        def go() -> int:
            with bb.open("big.bin") as f:
                return len(f.read())
        t, n = timed(go)
        assert n == GiB
        return t

    dropped = drop_page_cache()
    cold_cli = cli_download()
    shutil.rmtree(home / "cache" / "chunks", ignore_errors=True)
    drop_page_cache()
    cold_py = py_read()
    warm_cli = min(cli_download() for _ in range(2))
    warm_py = min(py_read() for _ in range(2))
    mib = GiB / (1 << 20)
    # The floor of any `read()` of 1 GiB: making a 1 GiB bytes object (fresh pages, each
    # faulted in and written once), which a download to a file never pays.
    floor = min(timed(lambda: len(b"\x01" * GiB))[0] for _ in range(3))
    cold_note = "page cache dropped" if dropped else "page cache NOT dropped (not permitted)"
    rows.append(("1 GiB: `datamon bundle download file`, cold", f"{cold_cli:.2f} s ({mib / cold_cli:.0f} MiB/s)", cold_note))
    rows.append(("1 GiB: `bundle.open().read()`, cold (empty chunk cache)", f"{cold_py:.2f} s ({mib / cold_py:.0f} MiB/s)", f"{cold_cli / cold_py * 100:.0f}% of download"))
    rows.append(("1 GiB: making a 1 GiB `bytes` object in Python", f"{floor:.2f} s", "paid by every `read()` of 1 GiB"))
    rows.append(("1 GiB: `datamon bundle download file`, warm", f"{warm_cli:.2f} s ({mib / warm_cli:.0f} MiB/s)", ""))
    rows.append(("1 GiB: `bundle.open().read()`, warm (chunk cache)", f"{warm_py:.2f} s ({mib / warm_py:.0f} MiB/s)", f"{warm_cli / warm_py * 100:.0f}% of download"))
    shutil.rmtree(home / "cache" / "chunks", ignore_errors=True)

    # 2. 100,000 entries.
    if SMALL.is_dir():
        dm.create_repo("small")
        log(f"uploading {SMALL}")
        t, sb = timed(lambda: dm.upload("small", SMALL, "100k files"))
        log(f"upload small: {t:.1f} s")
        fresh = datamon.open(url)
        sbb = fresh.bundle("small", sb.id)
        t1, entries = timed(sbb.entries)
        t2, _ = timed(sbb.entries)
        rows.append((f"list {len(entries):,} entries (`bundle.entries()`), first call", f"{t1:.3f} s", "fresh store handle"))
        rows.append((f"list {len(entries):,} entries, again", f"{t2:.3f} s", ""))
    else:
        rows.append(("list 100,000 entries", "skipped", f"{SMALL} missing: bench/gen_dataset.py --preset small --out bench/data/small"))

    # 3. pandas.read_csv, 200 MB.
    try:
        import numpy as np
        import pandas as pd
    except ImportError:
        rows.append(("pandas.read_csv 200 MB", "skipped", "pandas not installed"))
    else:
        csvdir = WORK / "csv"
        csvdir.mkdir()
        n = 3_300_000
        rng = np.random.default_rng(1)
        df = pd.DataFrame({
            "id": np.arange(n),
            "ts": rng.integers(1_600_000_000, 1_700_000_000, n),
            "x": rng.random(n),
            "y": rng.normal(size=n),
            "cat": rng.choice(["red", "green", "blue", "violet"], n),
        })
        log("writing the CSV")
        df.to_csv(csvdir / "data.csv", index=False)
        size = (csvdir / "data.csv").stat().st_size
        dm.create_repo("csv")
        cb = dm.upload("csv", csvdir, "csv")
        local = min(timed(lambda: pd.read_csv(csvdir / "data.csv"))[0] for _ in range(3))

        def from_file_object() -> None:
            with open(csvdir / "data.csv", "rb") as f:
                pd.read_csv(f)

        # What every fsspec URL gets: pandas reads a Python file object (no native I/O).
        local_obj = min(timed(from_file_object)[0] for _ in range(3))
        local_url = min(timed(lambda: pd.read_csv(f"file://{csvdir / 'data.csv'}"))[0] for _ in range(3))
        so = {"store": url}
        via = min(timed(lambda: pd.read_csv(f"datamon://csv@{cb.id}/data.csv", storage_options=so))[0] for _ in range(3))
        mb = size / 1e6
        rows.append((f"pandas.read_csv {mb:.0f} MB, local path", f"{local:.2f} s", "best of 3; pandas' own file I/O"))
        rows.append((f"pandas.read_csv {mb:.0f} MB, local Python file object", f"{local_obj:.2f} s", "best of 3"))
        rows.append((f"pandas.read_csv {mb:.0f} MB, fsspec `file://`", f"{local_url:.2f} s", "best of 3"))
        rows.append((f"pandas.read_csv {mb:.0f} MB, `datamon://` (warm)", f"{via:.2f} s",
                     f"{via / local:.2f}x the path, {via / local_obj:.2f}x the file object, {via / local_url:.2f}x `file://`"))

    cpus = os.cpu_count()
    print(f"# Python SDK benchmark\n\n{platform.platform()}, {cpus} cores, Python {platform.python_version()}, "
          f"datamon {datamon.__version__}, local directory store on {WORK}\n")
    print("| measurement | time | note |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
