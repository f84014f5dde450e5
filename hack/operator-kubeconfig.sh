#!/usr/bin/env bash
# Print a kubeconfig for `make kube-up`'s control plane that authenticates as the chart's ServiceAccount
# with a TokenRequest token, so that `kinfer operator` run here is authorized exactly by the chart's RBAC:
#
#   hack/operator-kubeconfig.sh [SERVICEACCOUNT [NAMESPACE]] > .kube-local/operator.kubeconfig
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(realpath -m "${KUBE_LOCAL_DIR:-$ROOT/.kube-local}")"
ACCOUNT="${1:-kinfer}"
NAMESPACE="${2:-kinfer-system}"
KUBECTL=("$DIR/bin/kubectl" --kubeconfig "$DIR/kubeconfig")
server="$("${KUBECTL[@]}" config view -o jsonpath='{.clusters[0].cluster.server}')"
token="$("${KUBECTL[@]}" create token "$ACCOUNT" -n "$NAMESPACE" --duration=24h)"
cat <<YAML
apiVersion: v1
kind: Config
clusters:
- name: kinfer-local
  cluster: {server: "$server", certificate-authority: "$DIR/pki/ca.crt"}
users:
- name: $ACCOUNT
  user: {token: "$token"}
contexts:
- name: kinfer-local
  context: {cluster: kinfer-local, user: $ACCOUNT}
current-context: kinfer-local
YAML
