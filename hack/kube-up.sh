#!/usr/bin/env bash
# `make kube-up` (DESIGN.md §10): a real Kubernetes control plane as local processes, for the cluster
# test tier and for trying kinfer without a cluster provider.
#
# etcd, kube-apiserver (authorization Node,RBAC; Pod Security Admission and the default admission
# plugins, plus NodeRestriction and OwnerReferencesPermissionEnforcement; service-account token
# signing; an audit log of every request), kube-controller-manager (Job, garbage collector, service
# accounts, endpoints, ...) and kube-scheduler, with one registered Node, `kinfer-local`, that nothing
# runs containers on: a test plays its kubelet (tests/cluster). Certificates are made here with
# openssl. The admin kubeconfig is written to .kube-local/kubeconfig.
#
# Idempotent: a running control plane is left as it is. `make kube-down` stops it.
# Settings (environment): KUBE_LOCAL_DIR (.kube-local), KUBE_LOCAL_PORT (16443), KUBE_LOCAL_ETCD_PORT (12379).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(realpath -m "${KUBE_LOCAL_DIR:-$ROOT/.kube-local}")"
PORT="${KUBE_LOCAL_PORT:-16443}"
ETCD_PORT="${KUBE_LOCAL_ETCD_PORT:-12379}"
ETCD_PEER_PORT=$((ETCD_PORT + 1))
NODE="kinfer-local"
BIN="$DIR/bin"
PKI="$DIR/pki"
LOGS="$DIR/logs"
RUN="$DIR/run"
KUBECONFIG_ADMIN="$DIR/kubeconfig"
SERVER="https://127.0.0.1:$PORT"

say() { echo "kube-up: $*" >&2; }

alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# wait_for NAME SECONDS CMD...: poll CMD until it succeeds; on timeout show NAME's log and fail.
wait_for() {
    local name="$1" seconds="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ! alive "$name"; then
            say "$name exited; the end of $LOGS/$name.log:"
            tail -n 30 "$LOGS/$name.log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            say "$name not ready after ${seconds}s; the end of $LOGS/$name.log:"
            tail -n 30 "$LOGS/$name.log" >&2
            exit 1
        fi
        sleep 0.5
    done
}

# free_port NAME PORT: fail clearly when another process (another checkout's kube-up?) holds the port.
free_port() {
    if ! alive "$1" && (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
        say "port $2 for $1 is taken by another process (a control plane of another checkout?);"
        say "stop it, or choose other ports: KUBE_LOCAL_PORT (apiserver), KUBE_LOCAL_ETCD_PORT (etcd, and +1)"
        exit 1
    fi
}

# start NAME ARGS...: run a binary of $BIN in the background, in its own session, with a pid file.
start() {
    local name="$1"
    shift
    if alive "$name"; then
        return
    fi
    setsid "$BIN/$name" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
}

# --- binaries ---------------------------------------------------------------------------------------
"$ROOT/hack/kube-build.sh" "$BIN"
mkdir -p "$PKI" "$LOGS" "$RUN" "$DIR/etcd"
chmod 700 "$DIR/etcd"

# --- certificates (once) -----------------------------------------------------------------------------
cert() { # cert NAME SUBJECT [SERVER_SANS]: a key and a certificate signed by the local CA
    local name="$1" subject="$2" sans="${3:-}"
    [[ -f "$PKI/$name.crt" ]] && return
    openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
    local ext="$PKI/$name.ext"
    if [[ -n "$sans" ]]; then
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' "$sans" >"$ext"
    else
        printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' >"$ext"
    fi
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$ext"
}
if [[ ! -f "$PKI/ca.crt" ]]; then
    say "generating certificates in $PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 \
        -subj "/CN=kinfer-local-ca" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
fi
cert apiserver "/CN=kube-apiserver" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
cert admin "/O=system:masters/CN=kinfer-local-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
chmod 600 "$PKI"/*.key

kubeconfig() { # kubeconfig FILE CERT_NAME USER
    local file="$1" name="$2" user="$3"
    cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kinfer-local
  cluster:
    server: $SERVER
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$name.crt
    client-key: $PKI/$name.key
contexts:
- name: kinfer-local
  context: {cluster: kinfer-local, user: $user}
current-context: kinfer-local
EOF
    mv "$file.tmp" "$file"
    chmod 600 "$file"
}
kubeconfig "$KUBECONFIG_ADMIN" admin kinfer-local-admin
kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
kubeconfig "$DIR/scheduler.kubeconfig" scheduler system:kube-scheduler

# An audit policy recording who did what (metadata only): the cluster tests derive the operator's RBAC
# from it.
cat >"$DIR/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
EOF

# --- etcd --------------------------------------------------------------------------------------------
free_port etcd "$ETCD_PORT"
free_port etcd "$ETCD_PEER_PORT"
free_port kube-apiserver "$PORT"
start etcd --name kinfer-local --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kinfer-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver ----------------------------------------------------------------------------------
start kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,OwnerReferencesPermissionEnforcement \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$LOGS/audit.log" \
    --audit-log-maxsize 200 --audit-log-maxbackup 1 \
    --profiling=false --v=1
wait_for kube-apiserver 120 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$SERVER/readyz"

# --- kube-controller-manager and kube-scheduler ------------------------------------------------------
# nodelifecycle is off: no kubelet heartbeats the Node, and the test keeps it Ready instead.
start kube-controller-manager \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --controllers '*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --leader-elect=false --v=1
start kube-scheduler \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --v=1

KUBECTL=("$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN")
# The controller manager is working once it made the default namespace's ServiceAccount.
wait_for kube-controller-manager 120 "${KUBECTL[@]}" get serviceaccount default -n default
sleep 0.5
alive kube-scheduler || { say "kube-scheduler exited:"; tail -n 30 "$LOGS/kube-scheduler.log" >&2; exit 1; }

# --- the Node --------------------------------------------------------------------------------------
if ! "${KUBECTL[@]}" get node "$NODE" >/dev/null 2>&1; then
    "${KUBECTL[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE
  labels: {kubernetes.io/hostname: $NODE, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
EOF
fi
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
"${KUBECTL[@]}" patch node "$NODE" --subresource=status --type merge -p "$(cat <<EOF
{"status": {
  "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250", "nvidia.com/gpu": "8", "ephemeral-storage": "500Gi"},
  "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250", "nvidia.com/gpu": "8", "ephemeral-storage": "500Gi"},
  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "$NODE"}],
  "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "played by kinfer's tests", "lastHeartbeatTime": "$now", "lastTransitionTime": "$now"}],
  "nodeInfo": {"kubeletVersion": "v1.34.4", "operatingSystem": "linux", "architecture": "amd64",
               "containerRuntimeVersion": "none://0", "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
               "machineID": "", "systemUUID": "", "bootID": ""}
}}
EOF
)" >/dev/null
# TaintNodesByCondition marks a new Node not-ready; the node lifecycle controller would lift it.
"${KUBECTL[@]}" taint node "$NODE" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true

say "control plane up: $SERVER (Kubernetes $("${KUBECTL[@]}" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
say "export KUBECONFIG=$KUBECONFIG_ADMIN"
