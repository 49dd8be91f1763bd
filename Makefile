# visionpipe — `make help` lists the targets. `make run` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
SERVE := .venv-serve
SERVE_STAMP := $(SERVE)/.installed
OUTPUT ?= runs
ARGS ?=
PYTEST_ARGS ?=
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GIT_REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
IMAGE ?= visionpipe/visionpipe-cpu
GPU_IMAGE ?= visionpipe/visionpipe-gpu
BASE_IMAGE ?= python:3.11-slim-bookworm
CA_BUNDLE ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Two install sets: `make run` needs the project and what running it needs (.venv/.installed);
# `make test` adds the test-only clients and servers, the linters and the benchmarks'
# extras (.venv/.installed-dev). uv (pinned, from PyPI) installs both from constraints.txt
# in parallel and compiles the bytecode (a task process imports TensorFlow from .pyc):
# a fresh clone's set-up took 122 s with pip (2026-12-07).
# tf-keras (the legacy ImageDataGenerator that benchmarks/ compares against) declares
# `tensorflow`, which would install a second TensorFlow over tensorflow-cpu: no deps.
UV_VERSION := 0.13.8
DEV_STAMP := $(VENV)/.installed-dev
# $(call uv_install,PYTHON) ARGS: uv installs into PYTHON's venv (the host's CA bundle for TLS)
uv_install = SSL_CERT_FILE=$${SSL_CERT_FILE:-$$(test -f /etc/ssl/certs/ca-certificates.crt && echo /etc/ssl/certs/ca-certificates.crt)} \
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(1)
UV = $(call uv_install,$(BIN)/python) -c constraints.txt
UV_TOOLS = $(call uv_install,$(TOOLS)/bin/python) -c tools-constraints.txt
# uv itself, pinned, in .venv (every install below goes through it)
$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml constraints.txt | $(BIN)/uv
	$(UV) -e .
	@touch $(STAMP)

$(DEV_STAMP): $(STAMP) | $(BIN)/uv
	$(UV) -e ".[dev]"
	$(UV) --no-deps tf-keras
	@touch $(DEV_STAMP)

venv: $(STAMP) ## create .venv and install the pinned project to run it (done by run too)

dev: $(DEV_STAMP) ## add the test-only clients and servers, linters and benchmark extras (done by test too)

# zizmor and checkov in a venv of their own (checkov's pins conflict with the project's)
$(TOOLS_STAMP): tools-constraints.txt | $(BIN)/uv
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(UV_TOOLS) zizmor checkov
	@touch $(TOOLS_STAMP)

# visionpipe serve in a venv of its own: kserve 0.21 pins pandas<3 and psutil<6, the training
# stack has pandas 3 (mlflow) and psutil 7. KServe, the ONNX Runtime/OpenVINO runtimes and
# the project itself without its dependencies (serve imports only components/infra, vision, serve).
UV_SERVE = $(call uv_install,$(SERVE)/bin/python)
$(SERVE_STAMP): serve-requirements.txt serve-constraints.txt pyproject.toml | $(BIN)/uv
	@test -x $(SERVE)/bin/python || $(PYTHON) -m venv $(SERVE)
	$(UV_SERVE) -c serve-constraints.txt -r serve-requirements.txt
	$(UV_SERVE) --no-deps -e .
	@touch $(SERVE_STAMP)

serve-venv: $(SERVE_STAMP) ## the serving venv (.venv-serve) that `visionpipe serve` runs in (done by test too)

run: $(STAMP) ## the whole pipeline on builtin:digits, locally (ARGS="--data DIR ..." to change)
	$(BIN)/visionpipe run --output $(OUTPUT) $(ARGS)

prepare: $(STAMP) ## only the prepare stage on builtin:digits into $(OUTPUT)/stages/dataset
	$(BIN)/visionpipe prepare --data builtin:digits --output $(OUTPUT)/stages/dataset $(ARGS)

train: $(STAMP) ## only the train stage, on the dataset from `make prepare`
	$(BIN)/visionpipe train --dataset $(OUTPUT)/stages/dataset --output $(OUTPUT)/stages/model $(ARGS)

evaluate: $(STAMP) ## only the evaluate stage, on the outputs of `make prepare train`
	$(BIN)/visionpipe evaluate --dataset $(OUTPUT)/stages/dataset --model $(OUTPUT)/stages/model --output $(OUTPUT)/stages/evaluation $(ARGS)

export: $(STAMP) ## only the export stage, on the outputs of `make prepare train`
	$(BIN)/visionpipe export --dataset $(OUTPUT)/stages/dataset --model $(OUTPUT)/stages/model --output $(OUTPUT)/stages/export $(ARGS)

compile: $(STAMP) ## write the Kubeflow pipeline YAML to build/visionpipe.yaml
	$(BIN)/visionpipe compile --output build/visionpipe.yaml

lint: $(DEV_STAMP) $(TOOLS_STAMP) ## ruff check and format check; zizmor (offline) on the CI workflow
	$(BIN)/ruff check components pipelines tests benchmarks
	$(BIN)/ruff format --check components pipelines tests benchmarks
	$(TOOLS)/bin/zizmor --offline .github/workflows/

format: $(DEV_STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix components pipelines tests benchmarks
	$(BIN)/ruff format components pipelines tests benchmarks

test: $(DEV_STAMP) $(SERVE_STAMP) ## lint, k8s-check, then every test (unit, integration, e2e; slow ones included)
	$(MAKE) --no-print-directory lint
	@if command -v kubectl >/dev/null; then $(MAKE) --no-print-directory k8s-check; \
	else echo "test: kubectl not installed; k8s-check skipped (tests/test_k8s.py says so too)"; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

k8s-check: $(DEV_STAMP) $(TOOLS_STAMP) ## render every k8s/ overlay, validate it (API schema, visionpipe's parsers) and run checkov on it
	$(BIN)/python -m pipelines.k8s_check
	@mkdir -p build
	@for overlay in k8s/overlays/*/; do \
		name=$$(basename $$overlay); kubectl kustomize $$overlay > build/k8s-$$name.yaml || exit 1; \
		echo "k8s-check: checkov on $$overlay"; \
		$(TOOLS)/bin/checkov -f build/k8s-$$name.yaml --framework kubernetes --compact --quiet \
			--skip-download || exit 1; \
	done

test-fast: $(DEV_STAMP) $(SERVE_STAMP) ## the tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# $(call build_image,FLAVOR,NAME): docker/Dockerfile tagged <version> and <git revision>
define build_image
	@rm -f docker/ca/ca.crt
	$(if $(CA_BUNDLE),cp $(CA_BUNDLE) docker/ca/ca.crt)
	docker build -f docker/Dockerfile --build-arg FLAVOR=$(1) \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$(VERSION) \
		--build-arg GIT_REVISION=$(GIT_REVISION) \
		-t $(2):$(VERSION) -t $(2):$(GIT_REVISION) . ; \
		status=$$?; rm -f docker/ca/ca.crt; exit $$status
endef

image: ## build the CPU stage image (BASE_IMAGE=..., CA_BUNDLE=path behind a TLS-intercepting proxy)
	$(call build_image,cpu,$(IMAGE))

images: image ## build the CPU and the GPU (CUDA) training images, tagged <version> and <git revision>
	$(call build_image,gpu,$(GPU_IMAGE))

SERVE_IMAGE ?= visionpipe/visionpipe-serve
.PHONY: serve-image
serve-image: ## build the serving image (visionpipe serve for push.serving: visionpipe), tagged <version> and <git revision>
	@rm -f docker/ca/ca.crt
	$(if $(CA_BUNDLE),cp $(CA_BUNDLE) docker/ca/ca.crt)
	docker build -f docker/Dockerfile.serve --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg VERSION=$(VERSION) --build-arg GIT_REVISION=$(GIT_REVISION) \
		-t $(SERVE_IMAGE):$(VERSION) -t $(SERVE_IMAGE):$(GIT_REVISION) . ; \
		status=$$?; rm -f docker/ca/ca.crt; exit $$status

# the pushed images' digests, printed as the prod overlay's images: entries to paste
digest = $$(docker inspect --format '{{index .RepoDigests 0}}' $(1):$(VERSION))
push-images: images ## push both images (IMAGE=<registry>/visionpipe-cpu ...); print (and write build/image-pins.txt) their digests for k8s/overlays/prod
	docker push $(IMAGE):$(VERSION) && docker push $(IMAGE):$(GIT_REVISION)
	docker push $(GPU_IMAGE):$(VERSION) && docker push $(GPU_IMAGE):$(GIT_REVISION)
	@mkdir -p build
	@$(BIN)/python -m pipelines.images "$(call digest,$(IMAGE))" "$(call digest,$(GPU_IMAGE))" | tee build/image-pins.txt

base-image: ## an offline Debian bookworm base for `make image BASE_IMAGE=visionpipe/base:bookworm`
	docker/make-base-image.sh visionpipe/base:bookworm

# The TFLite metadata schema (the one MediaPipe, the TFLite Support library and Android
# Studio read), compiled to Python by flatbuffers' own compiler (Debian: flatbuffers-compiler).
tflite-schema: ## regenerate components/export/schema/metadata_schema_generated.py with flatc
	cd components/export/schema && flatc --python --gen-object-api --gen-onefile metadata_schema.fbs

system-deps: ## optional, Debian/Ubuntu as root: Chromium and its driver (report and serve page tests), flatc (schema test), graphviz (model.png)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	@command -v chromedriver >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium-driver)
	@command -v flatc >/dev/null || (apt-get update -qq && apt-get install -y -qq flatbuffers-compiler)
	@command -v dot >/dev/null || (apt-get update -qq && apt-get install -y -qq graphviz)

clean: ## remove run outputs and build files (keeps .venv)
	rm -rf $(OUTPUT) build .pytest_cache

distclean: clean ## also remove .venv, .venv-tools and .venv-serve
	rm -rf $(VENV) $(TOOLS) $(SERVE)

.PHONY: dev serve-venv tflite-schema image images push-images base-image k8s-check help venv run prepare train evaluate export compile lint format test test-fast system-deps clean distclean
