#!/usr/bin/env bash
# The main job on the embedded local store: build datamon, upload a sample folder as a bundle,
# list it, download it back, check it byte for byte, change the folder, upload again and diff.
# Nothing to set up: the store lives under $DATAMON_HOME (default ~/.datamon).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p datamon-cli
dm() { ./target/release/datamon "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data/images" "$work/data/empty"
for i in 1 2 3; do head -c 200000 /dev/urandom > "$work/data/images/img$i.bin"; done
printf 'id,label\n1,cat\n2,dog\n' > "$work/data/labels.csv"
ln -s labels.csv "$work/data/current.csv"

repo="quickstart-$(date +%s)-$$"
dm repo create --repo "$repo" --description "quickstart sample"
id1=$(dm bundle upload --path "$work/data" --message "first version" --repo "$repo" --label latest | tail -n1 | sed 's/.*id://')
echo "bundle 1: $id1"
dm bundle list --repo "$repo"
dm bundle list files --repo "$repo" --bundle "$id1"

dm bundle download --repo "$repo" --label latest --destination "$work/out"
diff -r "$work/data" "$work/out" && echo "downloaded copy is identical"

echo '3,bird' >> "$work/data/labels.csv"
rm "$work/data/images/img2.bin"
id2=$(dm bundle upload --path "$work/data" --message "second version" --repo "$repo" --label latest | tail -n1 | sed 's/.*id://')
echo "bundle 2: $id2"
echo "what changed:"
dm bundle diff --repo "$repo" --bundle "$id1" --with-bundle "$id2" || true
dm bundle update --repo "$repo" --bundle "$id2" --destination "$work/out"
diff -r "$work/data" "$work/out" && echo "updated copy matches bundle 2"

echo "a pipeline step, run twice: what changed between the runs?"
dm repo create --repo "$repo-model" --description "quickstart model"
r1=$(dm run exec --step train --input "$repo@$id1" --param lr=0.1 --output "$repo-model:$work/model1" \
  -- sh -c 'wc -l < "$1/labels.csv" > "$2/rows"' sh "{input:$repo}" "{output:$repo-model}" | tail -n1 | sed 's/.*id://')
r2=$(dm run exec --step train --input "$repo@$id2" --param lr=0.2 --output "$repo-model:$work/model2" \
  -- sh -c 'wc -l < "$1/labels.csv" > "$2/rows"' sh "{input:$repo}" "{output:$repo-model}" | tail -n1 | sed 's/.*id://')
dm run diff "$r1" "$r2" || true
model=$(dm run get "$r2" --json | sed 's/.*"outputs":\[{"repo":"[^"]*","bundle":"\([^"]*\)".*/\1/')
dm bundle lineage --repo "$repo-model" --bundle "$model"
dm log --repo "$repo-model" -n 1
dm fsck
echo "quickstart OK"
