#!/usr/bin/env bash
# Yields a folder with the Kubernetes control-plane binaries the e2e tests run:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (and kubectl when the
# machine has one). Prints progress on stderr and the folder on the last line of stdout.
#
# Where the binaries come from, first that applies:
#   1. $KUBEBUILDER_ASSETS, when set (the envtest convention): used as it is.
#   2. The cache: ${XDG_CACHE_HOME:-~/.cache}/muster/k8s/<version>/bin, when complete.
#   3. A build from Debian bookworm's `kubernetes` source package (1.20.2) with Debian's
#      Go, as ../shared/LOCAL-K8S.md describes: deb-src entry, apt-get source, checksum
#      check of the tarballs, the reflect2 fix, make. About 6 minutes on 2 cores; needs
#      root (apt) and Debian's package archive. etcd comes from Debian's etcd-server.
#
# Idempotent: a second run with a complete cache does nothing but print the folder.
set -euo pipefail

DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
UPSTREAM="1.20.5+really1.20.2"
# From the Sources index of bookworm-security (signed by Debian's archive key).
ORIG_SHA256="b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc"
DEBIAN_SHA256="9b6e5fd41769d2b5badf2e73b274e3bcd90f85e13d06a1a4a845ccce018127d8"
NEEDED=(etcd kube-apiserver kube-controller-manager kube-scheduler)

say() { printf 'k8s-binaries: %s\n' "$*" >&2; }
die() { printf 'k8s-binaries: error: %s\n' "$*" >&2; exit 1; }

complete() {
  local dir=$1 b
  for b in "${NEEDED[@]}"; do
    [[ -x "$dir/$b" && -s "$dir/$b" ]] || return 1
  done
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  complete "$KUBEBUILDER_ASSETS" ||
    die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of: ${NEEDED[*]} (executable). Unset it to use or build the cached binaries."
  say "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/muster/k8s/$DEB_VERSION"
BIN="$CACHE/bin"
if complete "$BIN"; then
  say "cached: $BIN"
  echo "$BIN"
  exit 0
fi

say "no cached binaries in $BIN: building Kubernetes $UPSTREAM from Debian's source package"
[[ "$(uname -s)" == Linux ]] || die "building needs Linux (Debian bookworm)"
command -v apt-get >/dev/null || die "building needs apt-get (Debian bookworm); or set KUBEBUILDER_ASSETS to a folder with ${NEEDED[*]}"
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null || die "installing packages needs root or sudo"
  SUDO=(sudo)
fi

SRC_LIST=/etc/apt/sources.list.d/muster-deb-src.sources
if ! apt-get indextargets 2>/dev/null | grep -q 'Created-By: Sources'; then
  say "adding Debian source entries: $SRC_LIST"
  "${SUDO[@]}" tee "$SRC_LIST" >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  "${SUDO[@]}" apt-get update -qq
fi

PACKAGES=(golang-go rsync jq make etcd-server dpkg-dev golang-github-modern-go-reflect2-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install ${missing[*]} failed (is the Debian archive reachable?)"
fi

WORK="$CACHE/build"
mkdir -p "$WORK"
cd "$WORK"
ORIG="kubernetes_${UPSTREAM}.orig.tar.gz"
DEBIAN_TAR="kubernetes_${DEB_VERSION}.debian.tar.xz"
if ! echo "$ORIG_SHA256  $ORIG" | sha256sum --check --status 2>/dev/null; then
  say "downloading the source package kubernetes=$DEB_VERSION (34 MB)"
  apt-get source --download-only -qq "kubernetes=$DEB_VERSION" >&2 ||
    die "apt-get source kubernetes=$DEB_VERSION failed; is bookworm-security's deb-src reachable?"
fi
echo "$ORIG_SHA256  $ORIG" | sha256sum --check --quiet ||
  die "$ORIG does not have the expected SHA-256; delete $WORK and retry"
echo "$DEBIAN_SHA256  $DEBIAN_TAR" | sha256sum --check --quiet ||
  die "$DEBIAN_TAR does not have the expected SHA-256; delete $WORK and retry"
say "source tarballs verified (SHA-256)"

SRC="$WORK/kubernetes-$UPSTREAM"
if [[ ! -f "$SRC/.muster-prepared" ]]; then
  rm -rf "$SRC"
  say "unpacking with Debian's patches"
  dpkg-source --no-check -x "kubernetes_${DEB_VERSION}.dsc" "$SRC" >&2
  # reflect2 1.0.1 (vendored) crashes under Go >= 1.18; Debian's 1.0.2 does not.
  say "replacing vendored reflect2 1.0.1 with Debian's 1.0.2"
  rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
  mkdir -p "$SRC/vendor/github.com/modern-go/reflect2"
  cp -a /usr/share/gocode/src/github.com/modern-go/reflect2/. "$SRC/vendor/github.com/modern-go/reflect2/"
  rm -f "$SRC/vendor/github.com/modern-go/reflect2/go.mod" "$SRC/vendor/github.com/modern-go/reflect2/go.sum"
  mkdir -p "$SRC/.go/src/k8s.io"
  ln -sfn ../../.. "$SRC/.go/src/k8s.io/kubernetes"
  touch "$SRC/.muster-prepared"
fi

say "building kube-apiserver, kube-controller-manager, kube-scheduler with $(go version | cut -d' ' -f3) (about 6 minutes on 2 cores)"
cd "$SRC/.go/src/k8s.io/kubernetes"
if ! GOPATH="$SRC/.go" GO111MODULE=off GOFLAGS= CGO_ENABLED=0 \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >&2; then
  # A failed generator step can leave empty binaries behind that break every later run.
  rm -rf "$SRC/_output"
  die "make failed (log above); _output/ was removed so a retry starts clean"
fi

mkdir -p "$BIN.tmp"
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  cp "$SRC/_output/local/bin/linux/amd64/$b" "$BIN.tmp/$b"
done
cp /usr/bin/etcd "$BIN.tmp/etcd"
if command -v kubectl >/dev/null; then ln -sfn "$(command -v kubectl)" "$BIN.tmp/kubectl"; fi
complete "$BIN.tmp" || die "the build did not produce every binary in $BIN.tmp"
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
# The sources and Go build cache are not needed any more (about 2 GB).
rm -rf "$SRC" "$WORK"/*.tar.* "$WORK"/*.dsc
say "done: $BIN"
"$BIN/kube-apiserver" --version >&2 || true
echo "$BIN"
