#!/usr/bin/env bash
# Build the local control plane's binaries from the official Go modules (DESIGN.md §10), once.
#
#   hack/kube-build.sh DEST_DIR
#
# Components and versions are pinned by hack/kube/go.mod (Kubernetes v1.34.4: kube-apiserver, kubectl,
# kube-controller-manager, kube-scheduler; etcd v3.6.4) and hack/helm/go.mod (Helm v4.0.4). The
# binaries are cached under ${KINFER_CACHE:-~/.cache/kinfer}/kube-<hash of the go.mod/go.sum files>, so
# a fresh clone on a machine that built them before only copies them; with no cache it compiles
# (about 20-30 minutes on 2 cores, a few GB of Go build cache). Nothing is downloaded but Go modules
# from the module proxy.
set -euo pipefail

HACK="$(cd "$(dirname "$0")" && pwd)"
DEST="${1:?usage: kube-build.sh DEST_DIR}"
KUBE_VERSION="v1.34.4"
HASH="$(cat "$HACK"/kube/go.mod "$HACK"/kube/go.sum "$HACK"/helm/go.mod "$HACK"/helm/go.sum "$0" | sha256sum | cut -c1-16)"
CACHE="${KINFER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kinfer}/kube-$HASH"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm)

have_all() {
    local b
    for b in "${BINARIES[@]}"; do [[ -x "$1/$b" ]] || return 1; done
}

if ! have_all "$CACHE"; then
    command -v go >/dev/null || { echo "kube-build: 'go' is not on PATH (Go >= 1.24 is needed)" >&2; exit 2; }
    mkdir -p "$CACHE.tmp"
    # -trimpath and no debug info: smaller binaries and faster links; the version is stamped as a
    # release build would be, so kubectl's skew check and the apiserver's /version read v1.34.4.
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    echo "kube-build: compiling Kubernetes $KUBE_VERSION control plane and etcd (cached in $CACHE)" >&2
    (
        cd "$HACK/kube"
        go build -trimpath -ldflags "$ldflags" -o "$CACHE.tmp/" \
            k8s.io/kubernetes/cmd/kube-apiserver \
            k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler \
            k8s.io/kubernetes/cmd/kubectl
        go build -trimpath -ldflags "-s -w" -o "$CACHE.tmp/etcd" go.etcd.io/etcd/server/v3
    )
    echo "kube-build: compiling Helm" >&2
    (
        cd "$HACK/helm"
        go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v4.0.4" \
            -o "$CACHE.tmp/helm" helm.sh/helm/v4/cmd/helm
    )
    rm -rf "$CACHE"
    mv "$CACHE.tmp" "$CACHE"
fi

mkdir -p "$DEST"
for b in "${BINARIES[@]}"; do
    if ! cmp -s "$CACHE/$b" "$DEST/$b"; then
        cp "$CACHE/$b" "$DEST/$b.tmp" && mv "$DEST/$b.tmp" "$DEST/$b"
    fi
done
