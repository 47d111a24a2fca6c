#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/kubernetes/ offline, against the schemas of a
# pinned Kubernetes version (kubernetes-validate ships them; no cluster, no network).
#
#   pip install kubernetes-validate
#   scripts/validate-manifests.sh            # or KUBERNETES_VERSION=1.30.0 scripts/validate-manifests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version="${KUBERNETES_VERSION:-1.30.0}"
if command -v kubernetes-validate >/dev/null; then
    validate=(kubernetes-validate)
elif python3 -c 'import kubernetes_validate' 2>/dev/null; then
    validate=(python3 -m kubernetes_validate)
else
    echo "kubernetes-validate is not installed: pip install kubernetes-validate" >&2
    exit 1
fi
mapfile -t files < <(find deploy/kubernetes -name '*.yaml' | sort)
# --strict: unknown fields are errors.
"${validate[@]}" --strict --kubernetes-version "$version" "${files[@]}"
