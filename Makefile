PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint bench analyze-example clean image

# canaryd, then the demo (a project of its own in demo/, which adds `canaryd demo`).
$(STAMP): pyproject.toml demo/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet -e ./demo
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench demo

test: $(STAMP) lint
	$(BIN)/pytest -q

analyze-example: $(STAMP)
	$(BIN)/canaryd analyze --input examples/replay-bad-canary.json; echo "exit code: $$?"

bench: $(STAMP)
	$(BIN)/python bench/decision_quality.py
	$(BIN)/python bench/alert_latency.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/judge_speed.py

# The container image (Dockerfile). IMAGE is what deploy/kustomization.yaml's images: points at.
DOCKER ?= docker
IMAGE  ?= ghcr.io/canaryd/canaryd:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	@command -v $(DOCKER) >/dev/null 2>&1 || { \
	  echo "make image: '$(DOCKER)' not found; install Docker (or set DOCKER=podman) to build $(IMAGE)" >&2; exit 1; }
	$(DOCKER) build -t $(IMAGE) .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info daemon/*.egg-info demo/*.egg-info

.PHONY: demo
demo:
	bash scripts/demo.sh
