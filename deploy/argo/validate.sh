#!/usr/bin/env bash
# Validates the containers of deploy/argo/pipeline.yaml against the Kubernetes schemas: each
# step template becomes the Pod Argo would run (init containers, main as `main`, sidecars,
# the shared emptyDir), checked by kubernetes-validate --strict (pip install kubernetes-validate).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)/pods.yaml"
python3 - "$here/pipeline.yaml" "$out" <<'PY'
import sys, yaml
wf = yaml.safe_load(open(sys.argv[1]))
assert wf["kind"] == "WorkflowTemplate", wf["kind"]
docs = []
for t in wf["spec"]["templates"]:
    if "container" not in t:
        continue
    spec = {
        "restartPolicy": "Never",
        "volumes": wf["spec"].get("volumes", []),
        "initContainers": t.get("initContainers", []),
        "containers": [dict(t["container"], name="main")] + t.get("sidecars", []),
    }
    docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": t["name"]}, "spec": spec})
assert len(docs) == 3, len(docs)
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
kubernetes-validate --strict "$out"
