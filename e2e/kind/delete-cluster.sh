#!/usr/bin/env bash
# Deletes the e2e kind cluster.
set -euo pipefail
source "$(dirname "$0")/common.sh"
require_kind
kind delete cluster --name "$KIND_CLUSTER"
