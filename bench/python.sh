#!/usr/bin/env bash
# The Python SDK benchmark (bench/python.py): installs bindings/python into target/python-venv
# (as scripts/python-tests.sh does) and needs target/release/datamon (cargo build --release)
# and bench/data/small (bench/gen_dataset.py --preset small --out bench/data/small).
# The report goes to stdout and bench/results/python-<time>.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DATAMON_PY_VENV:-$root/target/python-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
    "$py" -m pip install --quiet --disable-pip-version-check maturin fsspec pandas pyarrow
    (cd "$root" && "$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./bindings/python)
fi
[ -d "$root/bench/data/small/v1" ] || python3 "$root/bench/gen_dataset.py" --preset small --out "$root/bench/data/small"
mkdir -p "$root/bench/results"
out="$root/bench/results/python-$(date +%Y%m%d-%H%M%S).md"
cd "$root"
"$py" bench/python.py | tee "$out"
