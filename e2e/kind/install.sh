#!/usr/bin/env bash
# Installs muster into the kind cluster with Helm, as a user would, from charts/muster:
# the CRD, the operator (image $E2E_OPERATOR_IMAGE, loaded by load-images.sh) in
# namespace muster-system with Pod Security "restricted" enforced; then checks that the
# example ClusterSpec forms (condition Formed) with the agent image $E2E_AGENT_IMAGE, and
# deletes it. Needs kind, Docker and helm; says so plainly without them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
require_kind --helm
kubectl config use-context "kind-$KIND_CLUSTER" >/dev/null

started=$(date +%s)
kubectl create namespace muster-system --dry-run=client -o yaml | kubectl apply -f -
kubectl label --overwrite namespace muster-system pod-security.kubernetes.io/enforce=restricted
say "helm install muster charts/muster (operator image $OPERATOR_IMAGE)"
helm upgrade --install muster "$REPO_ROOT/charts/muster" --namespace muster-system \
    --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
    --set image.pullPolicy=Never --wait --timeout 3m
say "operator ready after $(($(date +%s) - started)) s"

say "applying the minimal example ClusterSpec with agent image $AGENT_IMAGE"
kubectl create namespace muster-kind-smoke --dry-run=client -o yaml | kubectl apply -f -
sed "s|^  replicas: 3|  replicas: 3\n  agent:\n    image: $AGENT_IMAGE|" \
    "$REPO_ROOT/manifests/examples/minimal.yaml" | kubectl apply -n muster-kind-smoke -f -
applied=$(date +%s)
if ! kubectl wait -n muster-kind-smoke clusterspec/demo --for=condition=Formed --timeout=180s; then
    kubectl describe -n muster-kind-smoke clusterspec/demo >&2 || true
    kubectl logs -n muster-system deployment/muster-operator --tail=50 >&2 || true
    say "the example ClusterSpec did not form"
    exit 1
fi
say "ClusterSpec applied → Formed in $(($(date +%s) - applied)) s"
kubectl get clusterspecs -n muster-kind-smoke
kubectl delete namespace muster-kind-smoke --wait=false
