#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager v1.20.2 from Debian's `kubernetes` source
# package, with Debian's Go, into a cache outside the clone (keyed by version), so only the first
# run on a machine pays for it (~4 minutes on two cores). Prints the directory holding the binaries.
#
# Needs root on Debian (apt-get). Elsewhere, point HERALD_CONTROL_PLANE_BIN at a directory holding
# kube-apiserver, kube-controller-manager and etcd (for example what kubebuilder's envtest installs)
# and this script is not used.
set -euo pipefail

VERSION=v1.20.2
if [[ -n "${HERALD_CONTROL_PLANE_BIN:-}" ]]; then
  echo "$HERALD_CONTROL_PLANE_BIN"
  exit 0
fi
CACHE="${HERALD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}/control-plane-$VERSION"
if [[ -x "$CACHE/kube-apiserver" && -x "$CACHE/kube-controller-manager" ]]; then
  echo "$CACHE"
  exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "build-control-plane: no cached binaries in $CACHE and this is not a root Debian machine." >&2
  echo "Set HERALD_CONTROL_PLANE_BIN to a directory with kube-apiserver, kube-controller-manager" >&2
  echo "and etcd (e.g. kubebuilder envtest's assets), or run as root on Debian bookworm." >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in golang-go rsync make dpkg-dev etcd-server golang-github-modern-go-reflect2-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2
fi

work=$(mktemp -d /tmp/herald-kube-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
# A deb-src entry made from the machine's configured Debian mirror, in private apt directories so
# the system's apt configuration and lists are untouched.
mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
  | grep -oE 'https?://[^ ]+' | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
echo "deb-src $mirror bookworm main" > "$work/apt/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache")
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only -qq kubernetes >&2)
orig=$(ls "$work"/kubernetes_*.orig.tar.* | head -n1)
mkdir "$work/src"
tar -xf "$orig" -C "$work/src" --strip-components=1
cd "$work/src"
# The vendored reflect2 v1.0.1 crashes under Go >= 1.18 at the first custom resource
# (runtime.mapiterinit in UnsafeMapType.UnsafeIterate); Debian's 1.0.2 source replaces it.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
sed -i 's#^\(github.com/modern-go/reflect2\) v1.0.1#\1 v1.0.2#' go.mod vendor/modules.txt
sed -i '/^github.com\/modern-go\/reflect2 v1.0.1/d' go.sum
export GOFLAGS="-mod=vendor -tags=providerless" KUBE_GIT_VERSION=$VERSION GO111MODULE=on
export GOCACHE="$work/gocache" GOPATH="$work/gopath"
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2
mkdir -p "$CACHE.tmp"
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$CACHE.tmp/"
rm -rf "$CACHE" && mv "$CACHE.tmp" "$CACHE"
echo "$CACHE"
