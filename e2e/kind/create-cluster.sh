#!/usr/bin/env bash
# Creates the kind cluster for muster's e2e tests (one control plane, two workers) and
# makes it kubectl's current context. Needs kind and Docker; says so plainly without them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
require_kind

if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    say "cluster $KIND_CLUSTER exists; using it (delete it with e2e/kind/delete-cluster.sh)"
else
    say "creating cluster $KIND_CLUSTER"
    kind create cluster --name "$KIND_CLUSTER" --config "$(dirname "$0")/cluster.yaml" --wait 120s
fi
kubectl config use-context "kind-$KIND_CLUSTER" >/dev/null
kubectl get nodes -o wide
say "next: e2e/kind/load-images.sh, then e2e/kind/test.sh"
