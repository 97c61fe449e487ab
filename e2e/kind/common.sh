# Shared by the kind scripts: settings and the check that kind can run here.
# shellcheck shell=bash

KIND_CLUSTER="${KIND_CLUSTER:-muster-e2e}"
# The image tag the e2e tests use on kind (e2e::platform::KIND_AGENT_IMAGE).
AGENT_IMAGE="${E2E_AGENT_IMAGE:-localhost/muster/muster-agent:e2e}"
# The operator image, built from the same Dockerfile (target `operator`).
OPERATOR_IMAGE="${E2E_OPERATOR_IMAGE:-localhost/muster/muster-operator:e2e}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

say() { printf 'kind: %s\n' "$*" >&2; }

# kind runs Kubernetes nodes as containers: it needs the kind binary and a working
# container engine (and helm, for the scripts that install muster with it). Say plainly
# when this machine has none of them, and what to use instead.
require_kind() {
    local missing=()
    if [[ "${1:-}" == --helm ]]; then
        command -v helm >/dev/null 2>&1 || missing+=("helm (https://helm.sh/docs/intro/install/)")
    fi
    command -v kind >/dev/null 2>&1 || missing+=("the kind binary (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
    command -v kubectl >/dev/null 2>&1 || missing+=("kubectl")
    if ! command -v docker >/dev/null 2>&1; then
        missing+=("docker")
    elif ! docker info >/dev/null 2>&1; then
        missing+=("a running Docker daemon (docker info fails: $( (docker info 2>&1 || true) | grep -m1 -iE 'cannot|error'))")
    fi
    if ((${#missing[@]} > 0)); then
        say "this machine cannot run kind. Missing:"
        for m in "${missing[@]}"; do say "  - $m"; done
        say "kind needs a container engine; machines without one (such as muster's CI) run"
        say "the same e2e tests on the local platform instead: cargo test -p e2e"
        exit 2
    fi
}
