#!/usr/bin/env bash
# kinfer's images (DESIGN.md §11), called by the Makefile:
#   images/build.sh deps      podman, runc, debootstrap from apt where missing; containers.conf settings
#   images/build.sh base      the Debian-made base (only when BASE is the local one)
#   images/build.sh images    kinfer/operator, kinfer/model-server (CPU), kinfer/loadgen; sizes
#   images/build.sh gpu       kinfer/model-server:<version>-gpu (VARIANT=gpu: CUDA builds of the runtimes),
#                             then images/gpu_check.py in it: CUDA provider listed, CUDA libraries loadable
#   images/build.sh push      podman push of the three (REGISTRY must be set)
#   images/build.sh tags      the tags the three get, one a line
# Variables: ENGINE (podman; docker works too), REGISTRY (a prefix: registry.example.com/team), VERSION
# (pyproject.toml's), REVISION (the revision label; the commit's hash), BASE (default: the local base, built
# here from Debian packages; python:3.11-slim where a registry is reachable), MIN_FREE_GB (6: the free space
# a build asks for first).
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-podman}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)}
REGISTRY=${REGISTRY:-}
PREFIX=${REGISTRY:+${REGISTRY%/}/}kinfer
LOCAL_BASE=localhost/kinfer/base-python:3.11
ROOTFS=localhost/kinfer/debian:bookworm
BASE=${BASE:-$LOCAL_BASE}
NAMES=(operator model-server loadgen)
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

log() { printf '== %s\n' "$*" >&2; }
# An image's id, empty where there is none (podman's `image exists` is not docker's).
image_id() { $ENGINE image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# Flags of every build: docker format (OCI images drop HEALTHCHECK), the host's network (pip and apt in
# RUN steps), and this machine's CA bundle at a path of its own for pip (mounting it over /etc/ssl/certs
# would break the image's ca-certificates).
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
build_flags() {
  local flags=(--build-arg "BASE=$BASE")
  if [ "$ENGINE" = podman ]; then
    flags+=(--format docker --network host --layers)
    local ca=/etc/ssl/certs/ca-certificates.crt
    if [ -f "$ca" ]; then
      flags+=(--volume "$(dirname "$ca"):/host-certs:ro" --build-arg "PIP_CERT=/host-certs/$(basename "$ca")")
    fi
  fi
  printf '%s\n' "${flags[@]}"
}

deps() {
  [ "$ENGINE" = podman ] || { command -v "$ENGINE" >/dev/null || { echo "$ENGINE not found" >&2; exit 1; }; return; }
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing podman, runc, debootstrap (apt)"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman runc debootstrap containernetworking-plugins >/dev/null
  fi
  # crun fails on these cgroup-v1 hosts ("cgroups in hybrid mode not supported"); runc works. The default
  # rlimits are refused (setrlimit RLIMIT_NOFILE: operation not permitted); lowered ones are not.
  local conf=/etc/containers/containers.conf.d/50-kinfer.conf
  local want
  want=$'# written by kinfer\'s images/build.sh (make images)\n[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]\n\n[engine]\nruntime = "runc"'
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    log "writing $conf"
    $SUDO mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$want" | $SUDO tee "$conf" >/dev/null
  fi
}

base() {
  [ "$BASE" = "$LOCAL_BASE" ] || return 0
  if [ -z "$(image_id "$ROOTFS")" ]; then
    log "debootstrap bookworm (minbase) -> $ROOTFS"
    local dir
    dir=$(mktemp -d /var/tmp/kinfer-rootfs.XXXXXX)
    trap 'rm -rf "$dir"' RETURN
    $SUDO debootstrap --variant=minbase bookworm "$dir" http://deb.debian.org/debian >/dev/null
    # what python:3.11-slim leaves out too: downloaded packages, package lists, documentation, locales
    $SUDO rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* \
      "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/* "$dir"/var/log/*.log
    $SUDO tar -C "$dir" -c . | $ENGINE import --change 'CMD ["/bin/bash"]' - "$ROOTFS" >/dev/null
  fi
  log "base image $LOCAL_BASE"
  local flags old
  old=$(image_id "$LOCAL_BASE")
  mapfile -t flags < <(build_flags)
  $ENGINE build -q "${flags[@]}" --build-arg "ROOTFS=$ROOTFS" -f images/base/Dockerfile -t "$LOCAL_BASE" . >/dev/null
  drop_replaced "$old" "$LOCAL_BASE"
}

# The image a tag named before a build, removed once the build moved the tag elsewhere (with the
# intermediate layers only it used; podman's rmi takes its untagged parents along). Without this every
# rebuild (each commit is a new revision label) left the old images untagged: ~2 GB a build, until the
# disk was full. An image still in use (a container, another tag) stays, and the log says so.
drop_replaced() {  # OLD_ID TAG
  local old=$1 tag=$2
  [ -n "$old" ] && [ "$old" != "$(image_id "$tag")" ] || return 0
  $ENGINE rmi "$old" >/dev/null 2>&1 || log "kept ${old:0:12}, which $tag named before: still in use (removed by the next build once unused)"
}

# Old images of ours that a container still used when a build replaced them (drop_replaced kept them),
# removed once nothing uses them: untagged images with the label title of one of the three.
drop_kept() {
  local name
  for name in "${NAMES[@]}"; do
    $ENGINE image prune -f --filter "label=org.opencontainers.image.title=kinfer-$name" >/dev/null
  done
}

# Room for a build from an empty layer cache (the model server's runtimes are ~1.5 GB, copied once
# between stages), asked before the build rather than met halfway as "no space left on device".
MIN_FREE_GB=${MIN_FREE_GB:-6}
room() {
  local root free
  root=$($ENGINE info --format '{{.Store.GraphRoot}}' 2>/dev/null || echo /var/lib/containers/storage)
  [ -d "$root" ] || root=/
  free=$(df -P -BG "$root" | awk 'NR == 2 {sub("G", "", $4); print $4}')
  if [ "$free" -lt "$MIN_FREE_GB" ]; then
    echo "images/build.sh: ${free} GB free under $root, a build needs ${MIN_FREE_GB} GB (MIN_FREE_GB);" \
         "untagged images ($ENGINE image prune) or stopped containers may be what fills it" >&2
    exit 1
  fi
}

# A build tags its pkg stage too (localhost/kinfer-build/NAME:TAG-pkg), so that stage and the deps stage
# below it are never untagged leftovers, and the layer cache of the runtimes survives an image prune.
build() {  # NAME TAG [extra flags...]
  local name=$1 tag=$2 flags start stage old_tag old_stage
  shift 2
  stage=localhost/kinfer-build/$name:${tag##*:}-pkg
  old_tag=$(image_id "$tag")
  old_stage=$(image_id "$stage")
  mapfile -t flags < <(build_flags)
  start=$(date +%s)
  log "building $tag"
  $ENGINE build "${flags[@]}" "$@" -f "images/$name/Dockerfile" --target pkg -t "$stage" . >&2
  # The version and revision as --label, not build args: podman 4.3 (buildah 1.28) reuses a cached LABEL
  # step whose ${REVISION} changed (the label kept the first build's commit), yet reruns the stage's
  # RUN and COPY steps for any changed build arg (a new 1.4 GB copy of the runtimes each commit).
  $ENGINE build "${flags[@]}" "$@" -f "images/$name/Dockerfile" -t "$tag" \
    --label "org.opencontainers.image.version=$VERSION" --label "org.opencontainers.image.revision=$REVISION" . >&2
  drop_replaced "$old_tag" "$tag"
  drop_replaced "$old_stage" "$stage"
  log "built $tag in $(( $(date +%s) - start ))s"
}

sizes() {
  printf '%-48s %s\n' IMAGE SIZE
  for tag in "$@"; do
    printf '%-48s %s\n' "$tag" "$($ENGINE image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
  done
}

tags() { for name in "${NAMES[@]}"; do echo "$PREFIX/$name:$VERSION"; done; }

case "${1:-}" in
  deps) deps ;;
  base) base ;;
  tags) tags ;;
  images)
    room
    drop_kept
    base
    mapfile -t all < <(tags)
    for i in "${!NAMES[@]}"; do build "${NAMES[$i]}" "${all[$i]}"; done
    sizes "${all[@]}" ;;
  gpu)
    room
    drop_kept
    base
    build model-server "$PREFIX/model-server:$VERSION-gpu" --build-arg VARIANT=gpu
    sizes "$PREFIX/model-server:$VERSION-gpu"
    log "checking the CUDA libraries of $PREFIX/model-server:$VERSION-gpu (images/gpu_check.py)"
    $ENGINE run --rm -i --network host --entrypoint python "$PREFIX/model-server:$VERSION-gpu" - < images/gpu_check.py ;;
  push)
    [ -n "$REGISTRY" ] || { echo "push: set REGISTRY (make push REGISTRY=registry.example.com/team)" >&2; exit 2; }
    mapfile -t all < <(tags)
    for tag in "${all[@]}"; do log "pushing $tag"; $ENGINE push "$tag"; done
    echo "helm install kinfer charts/kinfer --set image.repository=$PREFIX/operator" \
         "--set serverImage=$PREFIX/model-server:$VERSION --set loadgenImage=$PREFIX/loadgen:$VERSION" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
