# The README's two commands: `make demo` and `make test`. Both do all set-up themselves.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: setup node node-stop demo test eval bench lint

setup:  ## install osreco (editable) with the CPU runtime, exporter, eval and test tools
	$(PIP) install --disable-pip-version-check -q -e ".[cpu,export,dev,eval,serve]"
	# recbole only ships MovieLens-100k to us; its own dependencies are not needed
	$(PIP) install --disable-pip-version-check -q --no-deps "recbole==1.2.1"
	# Debian's docker-compose validates docker/ offline (no engine runs on these machines)
	@command -v docker-compose >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) \
	  || echo "warning: docker-compose not installed; tests/test_docker.py will fail"; }

node:   ## start the local OpenSearch node (downloads once into the cache)
	osreco opensearch start

node-stop:
	osreco opensearch stop

demo: setup node  ## end to end on the embedded default: node, bundled model, MovieLens, sidecar, queries
	osreco demo

test: setup  ## every test, against a real node this target starts and stops
	osreco opensearch start
	@rc=0; OPENSEARCH_URL=$$(osreco opensearch url) $(PYTHON) -m pytest -ra $(PYTEST_ARGS) || rc=$$?; \
	osreco opensearch stop; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

eval: setup node
	osreco eval --out osreco-eval

bench: setup node
	$(PYTHON) -m bench.run_all
