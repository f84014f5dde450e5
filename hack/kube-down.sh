#!/usr/bin/env bash
# `make kube-down`: stop every process `make kube-up` started (scheduler, controller manager,
# apiserver, etcd, in that order) and leave none behind. The state directory is kept unless --purge.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(realpath -m "${KUBE_LOCAL_DIR:-$ROOT/.kube-local}")"
RUN="$DIR/run"

stop() {
    local name="$1" pidfile="$RUN/$1.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "kube-down: $name ($pid) ignored SIGTERM for 10 s; killing it" >&2
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop "$name"
done
if [[ "${1:-}" == "--purge" ]]; then
    rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/logs" "$DIR/run" "$DIR"/*.kubeconfig "$DIR/kubeconfig"
fi
echo "kube-down: stopped" >&2
