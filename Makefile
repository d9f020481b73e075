# The two commands of the README. Each creates .venv on first use (torch 2.14.1 and the rest).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.facegan-installed
DEMO_OUT ?= runs/demo

.PHONY: demo test install clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,metrics,export,app]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/facegan demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
