# edgefleet — build, run, test.
#
#   make run     fetch what is missing, build, start a hub and an enrolled agent; roll the digits CNN out to it
#   make test    go vet + all tests with the race detector
#   make bench   benchmarks, results table in bench-results/
#   make deps    onnxruntime shared library and the sample models (npm registry, sha256-pinned)
#   make images  OCI images edgefleet and edgefleet-agent (linux/amd64 + linux/arm64), no daemon; PUSH=host/prefix pushes
#   make packages  .deb packages (amd64, arm64) with the systemd units
#   make hil     hardware-in-the-loop suite: fleet in network namespaces, lossy links, power cuts (root)
#   make hil-ci  its short subset, run by CI after make test

SHELL      := /bin/bash
GO         ?= go
DEPS       := $(CURDIR)/.deps
BIN        := $(CURDIR)/bin/edgefleet
DATA       ?= $(CURDIR)/.data/agent
HTTP_ADDR  ?= 127.0.0.1:8080
GRPC_ADDR  ?= 127.0.0.1:8081
ORT_LIB    := $(DEPS)/onnxruntime/libonnxruntime.so.1
export EDGEFLEET_ORT_LIB ?= $(ORT_LIB)
export EDGEFLEET_DEPS    ?= $(DEPS)

.PHONY: k8s-apiserver test-k8s all build run run-agent bench-fleet bench-cluster gpu-check test bench deps deps-apt fuzz vet clean hil hil-ci images packages

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/edgefleet

deps: $(DEPS)/.stamp $(DEPS)/debs/.stamp

$(DEPS)/.stamp: deploy/deps/npm.lock deploy/deps/fetch.sh
	deploy/deps/fetch.sh $(DEPS)
	@touch $@

# Labelled speech, silence and music for the Silero VAD rows (Debian .debs, sha256-pinned).
$(DEPS)/debs/.stamp: deploy/deps/debian.lock deploy/deps/fetch-debs.sh
	deploy/deps/fetch-debs.sh $(DEPS)/debs
	@touch $@

# Debian packages the tests use (servers are started by the tests themselves).
# npm usually comes with the machine's Node.js; Debian's npm is only a fallback.
APT_PKGS := etcd-server mosquitto docker-registry libonnx-testdata prometheus chromium postgresql-15 nftables fuse3 iproute2 openssh-server
# Images, packages and units (deploy/): runc runs the amd64 image, qemu-user-static the arm64
# binary, gcc-aarch64-linux-gnu builds it with cgo, lintian checks the .debs, systemd-analyze the
# units. The arm64 base .debs come through `apt-get download`, hence the arm64 architecture.
APT_PKGS += runc qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross lintian systemd
deps-apt:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64 && apt-get update -qq; }; \
	  need=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	  command -v npm >/dev/null || need="$$need npm"; \
	  if [ -n "$$need" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need; fi; \
	fi

run: deps build
	BIN=$(BIN) DATA=$(CURDIR)/.data HTTP_ADDR=$(HTTP_ADDR) GRPC_ADDR=$(GRPC_ADDR) deploy/demo/run.sh

# run-agent: only an agent, serving the digits CNN imported straight into its cache.
run-agent: deps build
	@mkdir -p $(DATA)
	@$(BIN) model ls --data $(DATA) 2>/dev/null | grep -q '^digits-cnn ' || \
	  $(BIN) model import --data $(DATA) --name digits-cnn agent/testdata/digits/cnn.onnx
	@echo "  curl -s $(HTTP_ADDR)/v2/models/digits-cnn/infer -d @agent/testdata/digits/sample-request.json"
	$(BIN) agent --data $(DATA) --http $(HTTP_ADDR) --grpc $(GRPC_ADDR)

vet:
	$(GO) vet ./...
	$(GO) vet -tags gpu ./hil-tests/gpucheck/
	$(GO) vet -tags results ./quantize/
	$(GO) vet -tags scale ./hil-tests/fleetsim/
	$(GO) vet -tags agentonly ./cmd/edgefleet/
	$(GO) vet -tags scale ./hub/broker/natsbus/

test: deps-apt deps vet
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=30000x FUZZTIME_LIGHT=3000x

# kube-apiserver v1.37.2 built from the Go module proxy (deploy/k8s/tools pins
# k8s.io/kubernetes) into .deps/k8s for the sidecar's API-server test; about
# 1300 CPU-seconds cold, so it stays out of `make test`.
k8s-apiserver:
	deploy/k8s/build-apiserver.sh

# The sidecar injector against a real kube-apiserver + etcd (the chart's
# rendered webhook; Deployment and Job pods; the injector down under each
# failurePolicy). Run by .ci/run after `make test`; the first run builds
# kube-apiserver (~1300 CPU-seconds), later runs take seconds.
test-k8s: deps-apt k8s-apiserver
	$(GO) test -tags k8s -count=1 -run TestWebhookWithAPIServer ./deploy/helm/

# A count (30000x) rather than a duration in `make test`: a time-boxed fuzz
# run on a loaded 2-core machine can end with a spurious "context deadline
# exceeded" from the fuzzing coordinator. The targets in FUZZ_LIGHT (added
# with issue 16: enrollment, CSRs, tokens, signature payloads and trust keys,
# device messages, ONNX reading) run FUZZTIME_LIGHT in `make test`; each
# costs an instrumented build besides its runs, and their seed corpora also
# run in every plain `go test`. `make fuzz` gives every target FUZZTIME.
FUZZTIME       ?= 30s
FUZZTIME_LIGHT ?= $(FUZZTIME)
FUZZ_DIRS      := agent ota hub quantize sidecar
FUZZ_LIGHT     := FuzzEnrollRequest FuzzSignDeviceCSR FuzzParseToken FuzzCheckPayload FuzzParsePublicKeysPEM \
                  FuzzDeviceMessages FuzzReadModel
fuzz:
	@set -e; dirs=$$(ls -d $(FUZZ_DIRS) 2>/dev/null); \
	for t in $$(grep -rhoE '^func (Fuzz[A-Za-z0-9_]+)' --include='*_test.go' $$dirs | sed 's/func //' | sort -u); do \
	  pkg=$$(grep -rlE "^func $$t\(" --include='*_test.go' $$dirs | head -1 | xargs dirname); \
	  n=$(FUZZTIME); case " $(FUZZ_LIGHT) " in *" $$t "*) n=$(FUZZTIME_LIGHT);; esac; \
	  echo "fuzz $$pkg $$t ($$n)"; \
	  $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$$n ./$$pkg; \
	done

# The Node.js peer for the serving benchmark: onnxruntime-node from npm
# (its linux-x64 binding ships in the package; --ignore-scripts skips downloads).
$(DEPS)/nodepeer/node_modules/onnxruntime-node/package.json:
	mkdir -p $(DEPS)/nodepeer
	cd $(DEPS)/nodepeer && echo '{"private":true}' > package.json && \
	  npm install --ignore-scripts --no-audit --no-fund --silent onnxruntime-node@1.24.3

# BENCH_BASELINE=path/to/an/older/edgefleet adds a before/after table measured in the same run.
BENCH_BASELINE ?=
bench: deps build $(DEPS)/nodepeer/node_modules/onnxruntime-node/package.json
	@mkdir -p bench-results
	$(BIN) bench serving --model agent/testdata/digits/cnn.onnx --name digits-cnn --concurrency 1,32 --goals digits --rounds 3 --duration 1500ms \
	  --node-peer $(DEPS)/nodepeer/node_modules --node-script hil-tests/nodepeer/server.js \
	  --swap-model agent/testdata/digits/transformer.onnx --cycles 100 $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE)) \
	  --out bench-results/serving-digits-cnn.md
	$(BIN) bench serving --model .deps/models/ch_PP-OCRv4_rec_infer.onnx --name ocr-rec --shape x=1x3x48x320 \
	  --concurrency 1,2 --goals ocr --rounds 3 --duration 1500ms --node-peer $(DEPS)/nodepeer/node_modules --node-script hil-tests/nodepeer/server.js \
	  --out bench-results/serving-ocr-rec.md
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./agent/httpapi ./agent/grpcapi ./agent/cache ./agent/batching ./agent | tee bench-results/agent-bench.txt
	$(GO) test -run='^$$' -bench='Pull50MB|ResumeAfterCut50' -benchtime=10x ./ota | tee bench-results/ota-bench.txt
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout=30m ./agent/telemetry | tee bench-results/telemetry-bench.txt
	$(GO) test -run='^$$' -bench=. -count=1 ./quantize | tee bench-results/quantize-bench.txt
	$(GO) test -tags results -run '^TestResults$$' -count=1 -timeout 60m ./quantize/   # rewrites quantize/RESULTS.md
	$(MAKE) --no-print-directory bench-fleet

# The CUDA execution provider end to end on this machine's NVIDIA GPU: a model
# served on the GPU, then a GPU fault -> CPU fallback (hil-tests/gpucheck).
# Fails with a clear message where there is no NVIDIA GPU; not part of `make test`.
gpu-check:
	hil-tests/gpucheck/run.sh

# 10,000 simulated agents on one hub: rollout time, hub memory per device, hub CPU (~3 min).
bench-fleet:
	@mkdir -p bench-results
	EDGEFLEET_BENCH_OUT=$(CURDIR)/bench-results/fleet-scale.md $(GO) test -tags scale -run '^TestScale10k$$' -count=1 -timeout 20m -v ./hil-tests/fleetsim/

# Daemonless OCI images (deploy/images): OCI layouts in dist/images/, digests and sizes printed.
images: deps-apt deps
	$(GO) run ./deploy/release images --out dist/images $(if $(PUSH),--push $(PUSH))

# .deb packages (deploy/packages) in dist/packages/.
packages: deps-apt deps
	$(GO) run ./deploy/release packages --out dist/packages

# Hardware-in-the-loop suite (hil-tests/, needs root): a hub and a fleet of
# agent processes in network namespaces with lossy links, partitions, power
# cuts (FUSE), a full disk, restarts and clock skew. Reports in hil-results/.
# HIL_FLAGS adds runner flags, e.g. HIL_FLAGS='-inventory boards.yaml'.
HIL_BIN := $(CURDIR)/bin/hil
HIL_FLAGS ?=
$(HIL_BIN): FORCE
	$(GO) build -o $(HIL_BIN) ./hil-tests
FORCE:

hil: deps-apt deps build $(HIL_BIN)
	$(HIL_BIN) -devices 6 -scenarios 1,2,3,4,5,6,7,8 -cuts 50 -out hil-results/full $(HIL_FLAGS)

# The short subset CI runs after `make test` (a few minutes): 4 devices,
# link down twice, 10 power cuts, the hub away (compressed), a bad model.
hil-ci: deps-apt deps build $(HIL_BIN)
	$(HIL_BIN) -devices 4 -scenarios 2,3,4,7 -cuts 10 -compress -out hil-results/ci $(HIL_FLAGS)

# Cluster-mode messaging: devices over MQTT into 3 NATS nodes (JetStream, R3),
# consumed by 1 then 3 hub replicas in one run (~1 min; EDGEFLEET_SCALE_DEVICES).
bench-cluster:
	@mkdir -p bench-results
	EDGEFLEET_BENCH_OUT=$(CURDIR)/bench-results/cluster-ingest.txt $(GO) test -tags scale -run '^TestScaleIngest$$' -count=1 -timeout 20m -v ./hub/broker/natsbus/

clean:
	rm -rf bin .data bench-results hil-results dist
