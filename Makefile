PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint bench analyze-example clean

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

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info daemon/*.egg-info demo/*.egg-info

.PHONY: demo
demo:
	bash scripts/demo.sh
