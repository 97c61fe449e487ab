#!/usr/bin/env bash
# Runs the e2e tests that are written for any target against the kind cluster:
# E2E_TARGET=kind, the current kubeconfig, the image load-images.sh loaded. Tests of
# the local platform's own parts (control plane, cluster DNS, muster-local) are not run:
# kind has its own.
set -euo pipefail
source "$(dirname "$0")/common.sh"
require_kind
kubectl config use-context "kind-$KIND_CLUSTER" >/dev/null

cd "$REPO_ROOT"
E2E_TARGET=kind E2E_AGENT_IMAGE="$AGENT_IMAGE" \
    cargo test -p e2e --test agents_on_kubernetes --test pods -- "$@"
