"""The same calls through the loopback S3 server CI starts (skipped without one, unless
DATAMON_TEST_REQUIRE names s3). Variables as in crates/datamon-testing/src/backends.rs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import datamon


def _s3():
    endpoint = os.environ.get("DATAMON_TEST_S3_ENDPOINT")
    if not endpoint:
        if "s3" in os.environ.get("DATAMON_TEST_REQUIRE", "").split(","):
            pytest.fail("backend s3 is required (DATAMON_TEST_REQUIRE) but DATAMON_TEST_S3_ENDPOINT is not set")
        pytest.skip("DATAMON_TEST_S3_ENDPOINT is not set")
    bucket = os.environ.get("DATAMON_TEST_S3_BUCKET", "datamon")
    options = {
        "aws_endpoint": endpoint,
        "aws_allow_http": "true",
        "aws_region": "us-east-1",
        "aws_access_key_id": os.environ.get("DATAMON_TEST_S3_ACCESS_KEY", "test"),
        "aws_secret_access_key": os.environ.get("DATAMON_TEST_S3_SECRET_KEY", "test"),
    }
    url = f"s3://{bucket}/python-{random.getrandbits(64):016x}"
    return url, options


def test_s3_roundtrip(home: Path, src: Path, tmp_path: Path) -> None:
    url, options = _s3()
    dm = datamon.open(url, options=options)
    dm.create_repo("r")
    b = dm.upload("r", src, "on s3", label="v1")
    data = (src / "data" / "big.bin").read_bytes()
    with dm.bundle("r", "v1").open("data/big.bin") as f:
        for off in (0, 1, 1 << 20, len(data) - 5):
            f.seek(off)
            assert f.read(4096) == data[off:off + 4096]
    b.download(tmp_path / "out")
    assert b.diff(tmp_path / "out") == []
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("datamon", dm=dm, skip_instance_cache=True)
    assert fs.cat_file("r@v1/a.txt") == b"hello\n"


def test_s3_credentials_region_and_endpoint_from_an_aws_profile(tmp_path: Path) -> None:
    """With no AWS_* credentials in the environment, the profile AWS_PROFILE names in the
    shared files gives them (as the CLI reads them); a wrong profile is refused by the server."""
    import subprocess
    import sys

    url, options = _s3()
    creds = tmp_path / "credentials"
    creds.write_text(
        "[other]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
        f"[datamon-test]\naws_access_key_id = {options['aws_access_key_id']}\n"
        f"aws_secret_access_key = {options['aws_secret_access_key']}\n"
    )
    config = tmp_path / "config"
    config.write_text(
        f"[profile datamon-test]\nregion = {options['aws_region']}\n"
        f"endpoint_url = {options['aws_endpoint']}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_PROFILE="datamon-test",
        AWS_SHARED_CREDENTIALS_FILE=str(creds),
        AWS_CONFIG_FILE=str(config),
        DATAMON_HOME=str(tmp_path / "home"),
    )
    script = (
        "import sys, datamon\n"
        "dm = datamon.open(sys.argv[1])\n"
        "dm.create_repo('from-profile')\n"
        "print(sorted(r.name for r in dm.list_repos()))\n"
    )
    ok = subprocess.run([sys.executable, "-c", script, url], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "from-profile" in ok.stdout
    env["AWS_PROFILE"] = "other"
    bad = subprocess.run([sys.executable, "-c", script, url], env=env, capture_output=True, text=True)
    assert bad.returncode != 0, "the wrong profile's keys must be refused"
    assert "datamon." in bad.stderr, bad.stderr
