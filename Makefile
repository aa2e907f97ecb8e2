# make run   - the pipeline on the bundled sample log (local Spark, ./warehouse)
# make test  - the whole test suite (what CI runs)
# Both create .venv and install what they need on first use (and Java 17 if missing, as root).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= test,serve,report,bench
CONF   ?= conf/local.yaml
FROM   ?= 2024-01-08
TO     ?= 2024-01-10
SAMPLE_EVENTS ?= 150000

.PHONY: setup java chromium lint test test-quick run sample bench docs clean package test-airflow

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@touch $@

java:
	@scripts/ensure_java.sh

setup: $(STAMP) java

chromium:
	@scripts/ensure_chromium.sh

lint: setup
	$(PY) -m ruff check .

test: setup chromium lint test-airflow
	$(PY) -m pytest

test-quick: setup
	$(PY) -m pytest -m "not slow"

sample: setup
	$(PY) scripts/generate_sample_logs.py --out data/sample --n-events $(SAMPLE_EVENTS)

run: sample
	$(PY) jobs/run_pipeline.py --conf $(CONF) --from $(FROM) --to $(TO)
	@echo "tables under ./warehouse (database embedlib); see README for how to query them"

# make docs - render every benchmark figure in README.md and docs/ from benchmarks/results/*.json
docs: setup
	$(PY) scripts/render_docs.py

bench: setup
	@for b in benchmarks/bench_*.py benchmarks/stability_movielens.py; do echo "== $$b"; $(PY) $$b || exit 1; done
	$(PY) benchmarks/bench_churn.py --settings --versions 6
	$(PY) scripts/render_docs.py

clean:
	rm -rf warehouse data/sample reports benchmarks/work

# make package - dist/embedlib.zip for spark-submit --py-files. Always rebuilt (it takes well
# under a second): the zip records the git commit, which moves without embedlib/ changing.
PACKAGE := dist/embedlib.zip

package:
	$(PYTHON) scripts/package.py --out $(PACKAGE)

# make test-airflow - the DAG's tests with real Airflow, in a venv of its own (.venv-airflow,
# installed once from requirements-airflow.txt; AIRFLOW_HOME and its sqlite DB are temporary)
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

$(AIRFLOW_STAMP): requirements-airflow.txt
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q -r requirements-airflow.txt
	@touch $@

test-airflow: setup $(AIRFLOW_STAMP)
	$(AIRFLOW_VENV)/bin/python -m pytest tests_airflow
