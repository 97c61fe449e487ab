#!/usr/bin/env bash
# Builds the muster-agent, muster-operator and example application images from the repository's Dockerfile
# and loads them into the kind cluster's nodes under the tags the e2e tests use
# ($E2E_AGENT_IMAGE, default localhost/muster/muster-agent:e2e; $E2E_OPERATOR_IMAGE,
# default localhost/muster/muster-operator:e2e). Needs kind and Docker; says so plainly
# without them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
require_kind

# The example application under the name manifests/examples/keyowner.yaml uses.
EXAMPLE_IMAGE="${E2E_EXAMPLE_IMAGE:-ghcr.io/muster-dev/muster-example-keyowner:0.1.0}"
for pair in "agent=$AGENT_IMAGE" "operator=$OPERATOR_IMAGE" "example-keyowner=$EXAMPLE_IMAGE"; do
    target="${pair%%=*}"
    image="${pair#*=}"
    say "building $image (target $target) from $REPO_ROOT/Dockerfile"
    docker build --target "$target" --tag "$image" "$REPO_ROOT"
    say "loading $image into cluster $KIND_CLUSTER"
    kind load docker-image "$image" --name "$KIND_CLUSTER"
done
