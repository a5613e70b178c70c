# Outpost — build, test and demo. `make demo` and `make test` are the only
# commands a fresh machine needs; both install their dependencies first.

GO       ?= go
MODULE   := github.com/outpost-edge/outpost
VERSION  ?= $(shell git describe --tags --exact-match 2>/dev/null || echo 0.1.0-dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X $(MODULE)/deploy/version.Version=$(VERSION) -X $(MODULE)/deploy/version.Commit=$(COMMIT)
BIN      := bin
export CGO_ENABLED := 1

BINARIES := outpost-agent:agent/cmd/outpost-agent outpost-hub:hub/cmd/outpost-hub outpostctl:hub/cmd/outpostctl

# SIMD: amd64 builds take models/goengine's AVX2/FMA float kernel, which
# needs Go's simd experiment (the kernel itself is picked at run time, on
# CPUs with AVX2 and FMA); other architectures, `make cross` among them,
# build the pure-Go kernel.
SIMD := $(if $(filter amd64,$(shell $(GO) env GOARCH)),GOEXPERIMENT=simd)

.PHONY: all deps build test race fuzz staticcheck check chaos soak bench bench-peers cross dist nocgo lint demo clean

all: build

## deps: install Debian packages, ONNX Runtime (npm), Kafka (Maven), Go modules and the conformance venv (PyPI); cached in .cache/
deps:
	@deploy/scripts/deps.sh

## build: the three binaries for this machine, into bin/ (on amd64 with GOEXPERIMENT=simd)
build:
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
		name=$${b%%:*}; pkg=$${b#*:}; \
		$(SIMD) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$name ./$$pkg || exit 1; \
	done

## test: unit and integration tests against real Kafka, Mosquitto, nats-server and ONNX Runtime,
## then the pure-Go engine and its ONNX Runtime agreement (float and int8) again with the AVX2 kernels
## (GOEXPERIMENT=simd; ONNX Runtime comes from .cache, no services needed)
## the console's browser tests save their screenshots here (git-ignored)
ARTIFACTS ?= $(CURDIR)/artifacts
test: deps
	mkdir -p $(ARTIFACTS)/console
	OUTPOST_CONSOLE_SCREENSHOTS=$(ARTIFACTS)/console $(GO) run ./test/cmd/withservices -- $(GO) test -count=1 -timeout 25m ./...
	GOEXPERIMENT=simd $(GO) test -count=1 -timeout 25m ./models/goengine/ ./models/conformance/ ./quant/

## race: the packages with concurrency under the race detector
RACE_PKGS := ./agent/... ./hub/... ./sync/...
race: deps
	$(GO) run ./test/cmd/withservices -- $(GO) test -race -count=1 -timeout 25m $(RACE_PKGS)

## fuzz: every fuzz target for FUZZTIME each (native Go fuzzing)
FUZZTIME ?= 30s
fuzz:
	@GO=$(GO) deploy/scripts/fuzz.sh $(FUZZTIME)

## staticcheck: honnef.co staticcheck, pinned
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
staticcheck:
	$(GO) run $(STATICCHECK) ./...

## chaos: the fault-injection suite with every fault and its traffic stretched CHAOS_SCALE times (make test runs it at 1)
CHAOS_SCALE ?= 4
chaos: deps
	OUTPOST_CHAOS_SCALE=$(CHAOS_SCALE) $(GO) run ./test/cmd/withservices -- $(GO) test -count=1 -v -timeout 60m ./test/chaos/

## soak: 100 agents at steady load for DURATION (a Go duration in h/m/s) with a fault every
## few minutes; samples RSS, FDs, goroutines, JetStream and outbox sizes, fails on growth
## (make test runs it for 90 s with 20 agents)
DURATION ?= 1h
SOAK_TIMEOUT = $$(( $$(echo '$(DURATION)' | sed -e 's/h/*3600+/g; s/m/*60+/g; s/s/+/g; s/+$$//') + 1800 ))s
soak: deps
	OUTPOST_SOAK_DURATION=$(DURATION) $(GO) run ./test/cmd/withservices -- $(GO) test -count=1 -v -timeout $(SOAK_TIMEOUT) ./test/soak/

## check: what CI runs after make test: the race detector, fuzzing, staticcheck
check: race fuzz staticcheck nocgo

## bench: Go benchmarks of every package (quant/ side by side with onnxruntime.quantization, from .cache/venv-bench), then the system benchmarks against real services
bench: deps
	@deploy/scripts/deps.sh pybench
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v /test/bench)
	$(GO) run ./test/cmd/withservices -- $(GO) test -run '^$$' -bench 'HubToKafka|Baseline|Agent' -benchtime 400x ./test/bench/
	$(GO) run ./test/cmd/withservices -- $(GO) test -run '^$$' -bench Rollout1000 -benchtime 1x -timeout 20m ./test/bench/

## bench-peers: the agent's MQTT ingest side by side with eKuiper (issue 19): eKuiper built from
## lf-edge/ekuiper at EKUIPER_VERSION with -tags core into .cache/ekuiper/ (EKUIPER_SRC=<checkout>
## builds a local checkout instead of cloning), each system pinned to core PEERS_CPU, the generator,
## Mosquitto and the hub to PEERS_AUX_CPUS; PEERS_RATES (msg/s, comma-separated), PEERS_DURATION
## (per rate) and the other PEERS_* of test/bench/peers choose the steps; the table goes to
## stdout and $(ARTIFACTS)/peers.md
EKUIPER_VERSION := $(shell sed -n 's/^EKUIPER_VERSION=//p' deploy/scripts/deps.sh)
EKUIPER_DIR     := $(abspath $(or $(OUTPOST_CACHE),.cache)/ekuiper/$(EKUIPER_VERSION))
PEERS_CPU      ?= 0
PEERS_AUX_CPUS ?= 1
bench-peers: deps build
	@deploy/scripts/deps.sh ekuiper
	$(GO) test -c -tags peers -o $(BIN)/peers.test ./test/bench/peers/
	@mkdir -p $(ARTIFACTS)
	PEERS_CPU=$(PEERS_CPU) PEERS_EKUIPER_DIR=$(EKUIPER_DIR) PEERS_EKUIPER_VERSION=$(EKUIPER_VERSION) \
		PEERS_BIN=$(CURDIR)/$(BIN) PEERS_REPORT=$(ARTIFACTS)/peers.md \
		taskset -c $(PEERS_AUX_CPUS) $(BIN)/peers.test -test.run '^TestPeers$$' -test.v -test.timeout 60m

## cross: the agent for linux/arm64 and linux/arm (armv7), with cgo
cross: deps
	@mkdir -p $(BIN)/linux-arm64 $(BIN)/linux-armv7
	GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm64/outpost-agent ./agent/cmd/outpost-agent
	GOOS=linux GOARCH=arm GOARM=7 CC=arm-linux-gnueabihf-gcc \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-armv7/outpost-agent ./agent/cmd/outpost-agent

## dist: every binary for release into dist/: the agent and hub for linux amd64, arm64 and
## armv7 (cgo, with the Debian cross compilers) with ONNX Runtime in lib/ (amd64 and arm64:
## what `outpostctl firmware build --dist dist` puts in bundles), outpostctl without cgo for
## linux, darwin and windows on amd64 and arm64 (ONNX Runtime commands then say so; --engine go works)
DIST     := dist
CTL_OSES := linux darwin windows
ORT_DIR  := $(or $(OUTPOST_CACHE),.cache)/onnxruntime/$(shell sed -n 's/^ORT_VERSION=//p' deploy/scripts/deps.sh)
dist: deps
	@mkdir -p $(DIST)
	@for t in amd64: arm64:aarch64-linux-gnu-gcc arm:arm-linux-gnueabihf-gcc; do \
		arch=$${t%%:*}; cc=$${t#*:}; dir=$(DIST)/linux-$$arch; [ $$arch = arm ] && dir=$(DIST)/linux-armv7; \
		case $$arch in amd64) ort=linux-x64;; arm64) ort=linux-arm64;; *) ort=;; esac; \
		mkdir -p $$dir; \
		for b in outpost-agent:agent/cmd/outpost-agent outpost-hub:hub/cmd/outpost-hub; do \
			env GOOS=linux GOARCH=$$arch GOARM=7 $${cc:+CC=$$cc} $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$dir/$${b%%:*} ./$${b#*:} || exit 1; \
		done; \
		if [ -n "$$ort" ]; then mkdir -p $$dir/lib && cp $(ORT_DIR)/$$ort/libonnxruntime.so.1 $$dir/lib/ || exit 1; fi; \
	done
	@for os in $(CTL_OSES); do for arch in amd64 arm64; do \
		ext=; [ $$os = windows ] && ext=.exe; \
		mkdir -p $(DIST)/$$os-$$arch; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/$$os-$$arch/outpostctl$$ext ./hub/cmd/outpostctl || exit 1; \
	done; done
	@find $(DIST) -type f | sort

## nocgo: outpostctl builds without cgo for every OS it ships for (make check runs it)
nocgo:
	@for os in $(CTL_OSES); do for arch in amd64 arm64; do \
		echo "nocgo: outpostctl $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -o /dev/null ./hub/cmd/outpostctl || exit 1; \
	done; done

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## demo: hub with embedded broker and development Kafka, plus one agent; Ctrl-C stops both
demo: deps build
	@deploy/scripts/demo.sh $(BIN)

## clean: build output and demo data (the download cache stays)
clean:
	rm -rf $(BIN) $(DIST) data
