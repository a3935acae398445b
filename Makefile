# Two commands: `make demo` and `make test`. Both create .venv with pip when it is missing.
# `make demo` installs only what visionline needs to run; `make test` adds the test tools and the
# s3, label and ray extras. A stamp per set records what is installed, so demo-then-test installs
# just the rest, and test-then-demo installs nothing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev,s3,label,ray]"
	touch $(DEMO_STAMP) $(TEST_STAMP)

install: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/visionline demo $(DEMO_ARGS)

# Label Studio (for the labelling tests) pins its own Django stack, so it gets its own venv,
# .venv-labelstudio/, with a migrated template database; the script does nothing once both exist.
# The suite runs in TEST_WORKERS pytest-xdist processes, a test file each at a time (one core
# each; TEST_WORKERS=0 runs it in this process): serially it kept one of CI's two cores idle
# while tests waited on subprocesses and servers.
TEST_WORKERS ?= 2
test: $(TEST_STAMP)
	$(BIN)/python tests/labelstudio_support.py
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist
