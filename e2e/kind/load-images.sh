#!/usr/bin/env bash
# Builds the muster-agent image from the repository's Dockerfile and loads it into the
# kind cluster's nodes under the tag the e2e tests use ($E2E_AGENT_IMAGE, default
# localhost/muster/muster-agent:e2e). Needs kind and Docker; says so plainly without them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
require_kind

say "building $AGENT_IMAGE from $REPO_ROOT/Dockerfile"
docker build --tag "$AGENT_IMAGE" "$REPO_ROOT"
say "loading $AGENT_IMAGE into cluster $KIND_CLUSTER"
kind load docker-image "$AGENT_IMAGE" --name "$KIND_CLUSTER"
