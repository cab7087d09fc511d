# holo: every set-up step lives here, so a fresh machine needs nothing but `make`.
#   make demo   set up, then run the main job on the project's own sample study
#   make test   set up, then lint, type-check and run the whole test suite
#   make fuzz   set up, then run every fuzz harness for FUZZ_SECONDS each (fuzz/README.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests and tools use; installed with apt when missing and we are root.
# Software EGL (Mesa llvmpipe) and OSMesa: off-screen thumbnails (`holo convert --report`);
# redis-server: the multi-node session tests start their own (holo serve --bus redis://...).
# chromium: the web page's tests drive it headless (playwright-core, holo/web/tools/browser.mjs).
# mono-mcs, nunit-console, libnunit-framework2.6.3-cil: the Unity bridge's plain C# core is
# compiled (C# 7.2) and its NUnit 2.6 tests run here (tests/test_unity_core.py).
# postgresql: the shared store catalog's tests start their own (tests/postgres_server.py).
# orthanc, orthanc-dicomweb: the PACS the PACS tests start (tests/orthanc_server.py);
# dicom3tools: dciodvfy, which checks the DICOM objects holo writes.
# libopenigtlink-dev, g++: the OpenIGTLink reference library (1.11, protocol 2) and the
# compiler the gateway tests build their C++ peer with (tests/igtl_client/client.cxx).
APT_PACKAGES ?= libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 redis-server chromium \
  mono-mcs nunit-console libnunit-framework2.6.3-cil postgresql orthanc orthanc-dicomweb \
  dicom3tools libopenigtlink-dev g++
HOLO_DATA ?= $(abspath ../shared/data)
export HOLO_DATA

# npm, from Debian when missing and we are root; $(1) says what needs it.
define need_npm
@command -v npm >/dev/null 2>&1 || { \
  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; \
  else echo "npm not found: install Node.js >= 18 and npm ($(1))"; exit 1; fi; }
endef

# The web client: npm packages pinned by holo/web/package-lock.json, built into holo/web/dist
# (served by `holo serve --web`).
WEB := holo/web
WEB_STAMP := $(WEB)/node_modules/.package-lock.json
WEB_SOURCES := $(wildcard $(WEB)/src/*.js $(WEB)/src/*.html $(WEB)/src/*.css $(WEB)/src/*.svg $(WEB)/src/gen/holo/v1/*.js)
WEB_BUILT := $(WEB)/dist/index.html

GLTF_VALIDATOR := tests/gltf_validator
# npm ci rewrites node_modules/.package-lock.json, so it doubles as the stamp.
GLTF_VALIDATOR_STAMP := $(GLTF_VALIDATOR)/node_modules/.package-lock.json

.PHONY: setup system-deps demo test lint typecheck pytest proto sample-data bench clean gltf-validator web fuzz

setup: system-deps $(STAMP) $(GLTF_VALIDATOR_STAMP) $(WEB_BUILT)

web: $(WEB_BUILT)

$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	$(call need_npm,the web client is built with it)
	npm ci --prefix $(WEB) --no-audit --no-fund
	@touch $@

$(WEB_BUILT): $(WEB_STAMP) $(WEB)/build.mjs $(WEB_SOURCES)
	node $(WEB)/build.mjs

# The Khronos glTF validator (npm) that the tests run on every GLB they produce.
gltf-validator: $(GLTF_VALIDATOR_STAMP)

$(GLTF_VALIDATOR_STAMP): $(GLTF_VALIDATOR)/package.json $(GLTF_VALIDATOR)/package-lock.json
	$(call need_npm,the tests run the Khronos glTF validator)
	npm ci --prefix $(GLTF_VALIDATOR) --no-audit --no-fund
	@touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (run as root or install them with apt)"; exit 1; fi; \
	fi

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "holo needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(BIN)/holo studies sample_data/knee_ct sample_data/knee_dx
	$(BIN)/holo read sample_data/knee_ct -o sample_data/out/knee_ct.nii.gz
	$(BIN)/holo read sample_data/knee_dx
	$(BIN)/holo convert sample_data/knee_ct -o sample_data/out/knee.glb

test: setup lint typecheck pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

proto: setup
	$(BIN)/python proto/generate.py

# Each harness for FUZZ_SECONDS (CI runs them 15 s each, tests/test_fuzz.py); corpora and
# crashing inputs in FUZZ_WORK (ignored by git), kept between runs.
FUZZ_SECONDS ?= 600
FUZZ_WORK ?= fuzz/.work
fuzz: setup
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS) --work $(FUZZ_WORK) $(FUZZ_TARGETS)

sample-data: setup
	$(BIN)/python sample_data/generate.py

bench: setup
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/read.py
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/cluster.py
	$(BIN)/python benchmarks/session.py
	$(BIN)/python benchmarks/video.py
	$(BIN)/python benchmarks/web.py
	$(BIN)/python benchmarks/headset.py
	$(BIN)/python benchmarks/igtl.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache sample_data/out $(GLTF_VALIDATOR)/node_modules $(WEB)/node_modules $(WEB)/dist
