#!/usr/bin/env bash
# Runs muster's e2e tests on the kind cluster: installs muster with Helm (install.sh: the
# real `helm install`, then the example ClusterSpec must form), then the e2e tests that
# are written for any target, with E2E_TARGET=kind, the current kubeconfig and the images
# load-images.sh loaded. The chart tests then render with the real `helm template`.
# Not run here: tests of the local platform's own parts (control plane, cluster DNS,
# muster-local) — kind has its own — and the local platform's stand-in for helm install
# (chart.rs's installed-chart test), which install.sh has just done for real.
set -euo pipefail
source "$(dirname "$0")/common.sh"
require_kind --helm
kubectl config use-context "kind-$KIND_CLUSTER" >/dev/null

"$(dirname "$0")/install.sh"

cd "$REPO_ROOT"
E2E_TARGET=kind E2E_AGENT_IMAGE="$AGENT_IMAGE" \
    cargo test -p e2e --test agents_on_kubernetes --test pods --test chart -- \
    --skip the_installed_chart_runs_an_operator_that_forms_a_cluster "$@"
