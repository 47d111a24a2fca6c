#!/usr/bin/env bash
# The Python package's tests: builds and installs bindings/python the way its README says
# (`pip install ./bindings/python`, maturin over the workspace), then runs the pytest suite
# against the installed package. Works on a fresh machine with python3 (>= 3.9) and a Rust
# toolchain; needs PyPI for maturin, pytest, fsspec, pandas and pyarrow.
#
#   scripts/python-tests.sh [PYTEST ARGS...]
#
# The venv lives in target/python-venv (override with DATAMON_PY_VENV). The S3 test runs when
# DATAMON_TEST_S3_ENDPOINT (etc., see crates/datamon-testing/src/backends.rs) is set, and fails
# instead of skipping when DATAMON_TEST_REQUIRE contains s3. Exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DATAMON_PY_VENV:-$root/target/python-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv"; then
        echo "python-tests: cannot create a venv with $python (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$py" -m pip install --quiet --disable-pip-version-check maturin pytest fsspec pandas pyarrow
echo "python-tests: pip install ./bindings/python" >&2
(cd "$root" && "$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./bindings/python)

cd "$root/bindings/python"
# From this folder `import datamon` finds the installed package (tests/ holds no package).
exec "$py" -m pytest -q -p no:cacheprovider tests "$@"
