"""Fixtures: a real local store per test (tmp_path, a file:// URL) and a private DATAMON_HOME."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import datamon

if os.environ.get("DATAMON_PY_DEV"):
    # Running from the source tree (no installed entry point): register by hand.
    import fsspec

    fsspec.register_implementation("datamon", "datamon.fsspec.DatamonFileSystem", clobber=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("DATAMON_HOME", str(h))
    monkeypatch.delenv("DATAMON_STORE", raising=False)
    monkeypatch.delenv("DATAMON_CONTEXT", raising=False)
    return h


@pytest.fixture
def store_url(tmp_path: Path, home: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture
def dm(store_url: str) -> datamon.Datamon:
    return datamon.open(store_url)


def pseudo_random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A folder: text, a 3 MiB incompressible file, a compressible one, an empty dir, a link."""
    s = tmp_path / "src"
    (s / "data" / "deep").mkdir(parents=True)
    (s / "empty").mkdir()
    (s / "a.txt").write_text("hello\n")
    (s / "data" / "big.bin").write_bytes(pseudo_random(3 << 20, 1))
    (s / "data" / "deep" / "text.csv").write_text("".join(f"{i},{i * i}\n" for i in range(50_000)))
    os.symlink("a.txt", s / "link")
    return s
