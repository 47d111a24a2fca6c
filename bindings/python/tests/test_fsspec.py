"""The fsspec filesystem: found by entry point, reads with pandas and pyarrow, transactions."""

from __future__ import annotations

import random
from pathlib import Path

import fsspec
import pytest

import datamon
from conftest import pseudo_random

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture
def tables(dm: datamon.Datamon, tmp_path: Path):
    d = tmp_path / "tables"
    (d / "parts").mkdir(parents=True)
    df = pd.DataFrame({"id": range(20_000), "name": [f"n{i}" for i in range(20_000)],
                       "x": [i * 0.5 for i in range(20_000)]})
    df.to_csv(d / "train.csv", index=False)
    pq.write_table(pa.Table.from_pandas(df), d / "parts" / "p0.parquet", row_group_size=2000)
    (d / "parts" / "blob.bin").write_bytes(pseudo_random(1 << 20, 3))
    dm.create_repo("features")
    b = dm.upload("features", d, "tables", label="v1")
    return df, b, d


def test_entry_point_and_reads(store_url: str, tables) -> None:
    df, b, d = tables
    assert fsspec.get_filesystem_class("datamon").__name__ == "DatamonFileSystem"
    so = {"store": store_url}
    got = pd.read_csv("datamon://features@v1/train.csv", storage_options=so)
    pd.testing.assert_frame_equal(got, df)
    got = pd.read_csv("datamon://features/train.csv", storage_options=so)  # latest
    pd.testing.assert_frame_equal(got, df)
    got = pd.read_parquet(f"datamon://features@{b.id}/parts/p0.parquet", storage_options=so)
    pd.testing.assert_frame_equal(got, df)
    fs = fsspec.filesystem("datamon", store=store_url)
    t = pq.read_table("features@label:v1/parts/p0.parquet", filesystem=fs, columns=["x"])
    assert t.column("x").to_pylist() == list(df["x"])
    with fsspec.open("datamon://features@v1/parts/blob.bin", "rb", store=store_url) as f:
        f.seek(1000)
        assert f.read(10) == (d / "parts" / "blob.bin").read_bytes()[1000:1010]


def test_listing_and_ranges(store_url: str, tables, tmp_path: Path) -> None:
    df, b, d = tables
    fs = fsspec.filesystem("datamon", store=store_url)
    assert fs.ls("", detail=False) == ["features"]
    assert fs.ls("features@v1", detail=False) == ["features@v1/parts", "features@v1/train.csv"]
    info = fs.info("features@v1/train.csv")
    assert info["type"] == "file" and info["size"] == (d / "train.csv").stat().st_size
    assert fs.info("features@v1/parts")["type"] == "directory"
    assert fs.isdir("features@v1/parts") and fs.isfile("features@v1/parts/blob.bin")
    assert fs.exists("features/train.csv") and not fs.exists("features/nope.csv")
    assert fs.find("features@v1") == ["features@v1/parts/blob.bin", "features@v1/parts/p0.parquet",
                                      "features@v1/train.csv"]
    assert fs.glob("features@v1/**/*.parquet") == ["features@v1/parts/p0.parquet"]
    assert fs.glob("features@v1/*.csv") == ["features@v1/train.csv"]
    blob = (d / "parts" / "blob.bin").read_bytes()
    rng = random.Random(1)
    for _ in range(50):
        s = rng.randrange(len(blob))
        e = s + rng.randrange(100_000)
        assert fs.cat_file("features@v1/parts/blob.bin", s, e) == blob[s:e]
    assert fs.cat_file("features@v1/parts/blob.bin", -10) == blob[-10:]
    with pytest.raises(FileNotFoundError):
        fs.cat_file("features@v1/nope")
    with pytest.raises(FileNotFoundError):
        fs.ls("features@v1/nope")
    fs.get("features@v1/parts/", str(tmp_path / "got") + "/", recursive=True)
    assert (tmp_path / "got" / "blob.bin").read_bytes() == blob
    fs.get("features@v1/train.csv", str(tmp_path / "one.csv"))
    assert (tmp_path / "one.csv").read_bytes() == (d / "train.csv").read_bytes()


def test_transaction_commits_one_bundle(store_url: str, tables, tmp_path: Path) -> None:
    df, b, d = tables
    fs = fsspec.filesystem("datamon", store=store_url, skip_instance_cache=True)
    dm = fs.dm
    before = len(dm.bundles("features"))
    with fs.transaction:
        with fs.open("features@main/new/a.txt", "wb") as f:
            f.write(b"a")
        with fs.open("features@main/new/head.csv", "w") as f:
            df.head(10).to_csv(f, index=False)
        local = tmp_path / "put.bin"
        local.write_bytes(b"put")
        fs.put(str(local), "features@main/new/put.bin")
        assert len(dm.bundles("features")) == before, "nothing visible before the commit"
    bundles = dm.bundles("features")
    assert len(bundles) == before + 1
    new = bundles[-1]
    assert new.parents == [b.id] and new.branch == "main"
    assert new.read_bytes("new/a.txt") == b"a" and new.read_bytes("new/put.bin") == b"put"
    assert new.read_bytes("train.csv") == (d / "train.csv").read_bytes(), "the head's files stay"
    pd.testing.assert_frame_equal(
        pd.read_csv("datamon://features@main/new/head.csv", storage_options={"store": store_url}),
        df.head(10))

    with pytest.raises(RuntimeError):
        with fs.transaction:
            with fs.open("features@main/discarded.txt", "wb") as f:
                f.write(b"no")
            raise RuntimeError("abort")
    assert len(dm.bundles("features")) == before + 1, "an exception discards the writes"
    with pytest.raises(datamon.InvalidInput):
        fs.open("features@label:v1/x.txt", "wb")
