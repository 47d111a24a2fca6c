"""The SDK against real local stores: repos, bundles, reads, labels, branches, errors."""

from __future__ import annotations

import datetime as dt
import random
import threading
from pathlib import Path

import pytest

import datamon
from conftest import pseudo_random


def test_repos(dm: datamon.Datamon) -> None:
    assert dm.list_repos() == []
    r = dm.create_repo("images", "training images")
    assert r.name == "images" and r.description == "training images"
    assert [x.name for x in dm.list_repos()] == ["images"]
    assert dm.get_repo("images").description == "training images"
    with pytest.raises(datamon.AlreadyExists, match="images"):
        dm.create_repo("images")
    with pytest.raises(datamon.NotFound, match="nope"):
        dm.get_repo("nope")
    with pytest.raises(datamon.InvalidInput):
        dm.create_repo("bad name!")


def test_upload_list_get_entries(dm: datamon.Datamon, src: Path) -> None:
    dm.create_repo("r")
    seen = []
    b1 = dm.upload("r", src, "first", label="v1", meta={"team": "vision"},
                   progress=lambda what, done, total: seen.append((what, done, total)))
    assert b1.message == "first" and b1.meta == {"team": "vision"} and b1.branch == "main"
    assert b1.stats["files"] == 3 and b1.stats["symlinks"] == 1
    assert isinstance(b1.created_at, dt.datetime)
    assert seen, "progress was reported"
    (src / "a.txt").write_text("changed\n")
    b2 = dm.upload("r", src, "second", branch="exp")
    assert b2.branch == "exp"

    assert [b.id for b in dm.bundles("r")] == [b1.id, b2.id]
    assert [b.id for b in dm.bundles("r", where={"team": "vision"})] == [b1.id]
    assert [b.id for b in dm.bundles("r", where=["meta.team=vision"])] == [b1.id]
    assert [b.id for b in dm.bundles("r", since=dt.timedelta(hours=1))] == [b1.id, b2.id]
    assert dm.bundles("r", since=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)) == []

    assert dm.bundle("r").id == b2.id
    assert dm.bundle("r", "v1").id == b1.id
    assert dm.bundle("r", label="v1").id == b1.id
    assert dm.bundle("r", branch="exp").id == b2.id
    assert dm.bundle("r", branch="main").id == b1.id
    assert dm.bundle("r", id=b1.id) == b1
    assert dm.bundle("r", b1.id) == b1

    paths = [e.path for e in b1.entries()]
    assert paths == ["a.txt", "data/big.bin", "data/deep/text.csv", "link"]
    big = b1.entries(prefix="data/")
    assert [e.path for e in big] == ["data/big.bin", "data/deep/text.csv"]
    assert big[0].size == 3 << 20 and big[0].kind == "file" and len(big[0].hash) == 64
    assert big[0].mode & 0o777 == (src / "data" / "big.bin").stat().st_mode & 0o777
    assert abs(big[0].mtime_ns - (src / "data" / "big.bin").stat().st_mtime_ns) < 1000
    assert [e.path for e in b1.entries(glob="**/*.csv")] == ["data/deep/text.csv"]
    assert [e.path for e in b1.entries(glob="*.txt")] == ["a.txt"]
    assert [e.kind for e in b1.entries(glob="link")] == ["symlink"]

    assert b1.read_bytes("a.txt") == b"hello\n"
    assert b2.read_text("a.txt") == "changed\n"
    assert b1.read_bytes("data/big.bin") == (src / "data" / "big.bin").read_bytes()


def test_download_and_diff(dm: datamon.Datamon, src: Path, tmp_path: Path) -> None:
    dm.create_repo("r")
    b1 = dm.upload("r", src, "first")
    files, nbytes = b1.download(tmp_path / "all")
    assert files == 3
    assert (tmp_path / "all" / "data" / "big.bin").read_bytes() == (src / "data" / "big.bin").read_bytes()
    assert b1.diff(tmp_path / "all") == []
    b1.download(tmp_path / "csv", glob="**/*.csv")
    got = sorted(str(p.relative_to(tmp_path / "csv")) for p in (tmp_path / "csv").rglob("*") if p.is_file())
    assert got == ["data/deep/text.csv"]
    b1.download(tmp_path / "one", path="a.txt")
    assert (tmp_path / "one" / "a.txt").read_text() == "hello\n"
    with pytest.raises(datamon.AlreadyExists):
        b1.download(tmp_path / "all")
    with pytest.raises(datamon.PathNotFound):
        b1.download(tmp_path / "x", path="missing.txt")

    (src / "a.txt").write_text("changed\n")
    (src / "new.txt").write_text("new\n")
    (src / "data" / "deep" / "text.csv").unlink()
    assert b1.diff(src) == [("M", "a.txt"), ("D", "data/deep/text.csv"), ("A", "new.txt")]
    b2 = dm.upload("r", src, "second")
    assert b1.diff(b2) == b1.diff(b2.id) == [("M", "a.txt"), ("D", "data/deep/text.csv"), ("A", "new.txt")]


def test_labels_and_branches(dm: datamon.Datamon, src: Path) -> None:
    dm.create_repo("r")
    b1 = dm.upload("r", src, "one")
    (src / "a.txt").write_text("2")
    b2 = dm.upload("r", src, "two")
    rec = dm.set_label("r", "prod", b1, expect=None)
    assert rec.bundle == b1.id and rec.previous is None
    with pytest.raises(datamon.Conflict, match="prod"):
        dm.set_label("r", "prod", b2, expect=None)
    with pytest.raises(datamon.Conflict):
        dm.set_label("r", "prod", b2, expect=b2.id)
    dm.set_label("r", "prod", b2, expect=b1.id)
    dm.set_label("r", "prod", b1)  # no guard
    assert dm.get_label("r", "prod").bundle == b1.id
    assert [h.bundle for h in dm.label_history("r", "prod")] == [b1.id, b2.id, b1.id]
    assert list(dm.list_labels("r")) == ["prod"]
    with pytest.raises(datamon.NotFound, match="nolabel"):
        dm.get_label("r", "nolabel")

    assert dm.branch_head("r", "main") == b2.id
    assert dm.branch_head("r", "none") is None
    dm.create_branch("r", "exp", b1)
    with pytest.raises(datamon.AlreadyExists, match="exp"):
        dm.create_branch("r", "exp")
    with pytest.raises(datamon.Conflict, match="exp"):
        dm.set_branch("r", "exp", b2, expect=b2.id)
    dm.set_branch("r", "exp", b2, expect=b1.id)
    assert dm.branch_head("r", "exp") == b2.id
    assert [h.head for h in dm.branch_history("r", "exp")] == [b1.id, b2.id]
    assert sorted(b.name for b in dm.list_branches("r")) == ["exp", "main"]
    assert [e.bundle["id"] for e in dm.log("r")] == [b2.id, b1.id]


def test_errors_name_repo_bundle_path(dm: datamon.Datamon, src: Path) -> None:
    dm.create_repo("r")
    b = dm.upload("r", src, "one")
    with pytest.raises(FileNotFoundError) as e:
        b.open("data/missing.bin")
    assert isinstance(e.value, datamon.PathNotFound) and isinstance(e.value, datamon.NotFound)
    msg = str(e.value)
    assert "data/missing.bin" in msg and b.id in msg and '"r"' in msg
    with pytest.raises(datamon.NotFound, match="latest|nolabel"):
        dm.bundle("r", "nolabel")
    with pytest.raises(datamon.NotFound, match="empty"):
        dm.create_repo("empty")
        dm.bundle("empty")
    with pytest.raises(datamon.InvalidInput):
        b.open("data")  # a directory
    with pytest.raises(datamon.InvalidInput):
        dm.bundles("r", since="yesterday-ish")
    with pytest.raises(datamon.InvalidInput):
        b.download("/tmp/never", pattern="(")
    assert all(issubclass(c, datamon.Error) for c in (
        datamon.NotFound, datamon.PathNotFound, datamon.AlreadyExists, datamon.Conflict,
        datamon.InvalidInput, datamon.Corrupt, datamon.Transient, datamon.Cancelled,
        datamon.PermissionDenied, datamon.Busy, datamon.IOFailure))
    assert issubclass(datamon.InvalidInput, ValueError)


def test_unreachable_store_is_transient(tmp_path: Path, home: Path) -> None:
    opts = {
        "aws_endpoint": "http://127.0.0.1:9",
        "aws_allow_http": "true",
        "aws_access_key_id": "x",
        "aws_secret_access_key": "y",
        "aws_region": "us-east-1",
        "aws_connect_timeout": "1s",
        "aws_timeout": "2s",
    }
    with pytest.raises(datamon.Error) as e:
        datamon.open("s3://nobucket/p", options=opts)
    assert isinstance(e.value, datamon.Transient), (type(e.value), e.value)


def test_ranged_reads_at_random_offsets(dm: datamon.Datamon, src: Path) -> None:
    dm.create_repo("r")
    data = (src / "data" / "big.bin").read_bytes()
    text = (src / "data" / "deep" / "text.csv").read_bytes()
    b = dm.upload("r", src, "one")
    rng = random.Random(7)
    with b.open("data/big.bin") as f, b.open("data/deep/text.csv") as g:
        assert f.seekable() and f.readable() and f.size == len(data)
        for _ in range(200):
            for h, src_bytes in ((f, data), (g, text)):
                off = rng.randrange(0, len(src_bytes) + 10)
                n = rng.choice([0, 1, 17, 4096, 65_537, 1 << 20])
                h.seek(off)
                assert h.read(n) == src_bytes[off:off + n]
                assert h.tell() == min(off + n, max(off, len(src_bytes))) or off > len(src_bytes)
        f.seek(-100, 2)
        assert f.read() == data[-100:]
        buf = bytearray(1000)
        f.seek(12345)
        assert f.readinto(buf) == 1000 and bytes(buf) == data[12345:13345]
        assert f.pread(99, 10) == data[99:109]
    with pytest.raises(ValueError):
        f.read(1)


def test_threads(dm: datamon.Datamon, src: Path, tmp_path: Path) -> None:
    dm.create_repo("r")
    data = (src / "data" / "big.bin").read_bytes()
    b = dm.upload("r", src, "one")
    errors: list = []

    def reader(seed: int) -> None:
        try:
            rng = random.Random(seed)
            with b.open("data/big.bin") as f:
                for _ in range(30):
                    off = rng.randrange(len(data))
                    n = rng.randrange(1, 300_000)
                    f.seek(off)
                    assert f.read(n) == data[off:off + n]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def uploader(i: int) -> None:
        try:
            d = tmp_path / f"up{i}"
            d.mkdir()
            (d / "f.bin").write_bytes(pseudo_random(200_000, 100 + i))
            dm.upload("r", d, f"thread {i}", branch="main")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=uploader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(dm.bundles("r")) == 5
    assert len(dm.branch_history("r", "main")) == 5, "no concurrent branch move was lost"


def test_corrupted_pack_raises_corrupt(store_url: str, src: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    dm = datamon.open(store_url)
    dm.create_repo("r")
    b = dm.upload("r", src, "one")
    packs = [p for p in (tmp_path / "store" / "packs").rglob("*") if p.is_file()]
    assert packs, "the store has packs"
    for p in packs:
        raw = bytearray(p.read_bytes())
        for i in range(64, len(raw), 512):
            raw[i] ^= 0xFF
        p.chmod(0o644)
        p.write_bytes(bytes(raw))
    # A fresh home: no chunk cache to serve good copies.
    monkeypatch.setenv("DATAMON_HOME", str(tmp_path / "home2"))
    dm2 = datamon.open(store_url)
    b2 = dm2.bundle("r", b.id)
    with pytest.raises(datamon.Corrupt):
        b2.read_bytes("data/big.bin")
    with pytest.raises(datamon.Corrupt):
        b2.download(tmp_path / "out")


def test_interrupted_upload_leaves_no_bundle(dm: datamon.Datamon, tmp_path: Path) -> None:
    dm.create_repo("r")
    big = tmp_path / "big"
    big.mkdir()
    for i in range(8):
        (big / f"f{i}.bin").write_bytes(pseudo_random(24 << 20, 50 + i))
    fired = []

    def progress(what: str, done: int, total: int) -> None:
        if not fired:
            fired.append(done)
            # A Ctrl-C during the call: raised where Python runs, in the callback (a signal
            # sent with _thread.interrupt_main could land after a fast upload had finished).
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dm.upload("r", big, "never", label="x", progress=progress)
    assert fired
    assert dm.bundles("r") == []
    with pytest.raises(datamon.NotFound):
        dm.get_label("r", "x")
    # An exception in the progress callback cancels the same way.
    # New data: the same folder again would come from the stat cache before any progress call
    # (and enough of it that the upload outlasts the first 100 ms progress tick).
    big2 = tmp_path / "big2"
    big2.mkdir()
    for i in range(8):
        (big2 / f"f{i}.bin").write_bytes(pseudo_random(24 << 20, 90 + i))
    with pytest.raises(RuntimeError, match="stop"):
        dm.upload("r", big2, "never", progress=lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
    assert dm.bundles("r") == []
    b = dm.upload("r", big, "now")
    assert [x.id for x in dm.bundles("r")] == [b.id]


def test_open_by_context(tmp_path: Path, home: Path, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default context is the embedded store under $DATAMON_HOME.
    d = datamon.open()
    assert d.url == f"file://{home / 'store'}"
    home.mkdir(parents=True, exist_ok=True)
    other = tmp_path / "ctx-store"
    (home / "config.toml").write_text(
        f'context = "dev"\nauthor = "Ada <ada@example.com>"\n[contexts.dev]\nstore = "file://{other}"\n'
    )
    d = datamon.open()
    assert d.url == f"file://{other}" and d.author == "Ada <ada@example.com>"
    assert datamon.open(context="default").url == f"file://{home / 'store'}"
    with pytest.raises(datamon.InvalidInput, match="nope"):
        datamon.open(context="nope")
    monkeypatch.setenv("DATAMON_STORE", str(tmp_path / "env-store"))
    assert datamon.open().url == f"file://{tmp_path / 'env-store'}"
    d.create_repo("r")
    assert d.upload("r", src, "via context").author == "Ada <ada@example.com>"
