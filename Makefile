# attmask: set-up + main job (make demo) and tests (make test). Everything installs itself.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attmask-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test lint demo clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt tools/install.sh tools/install_mm.sh
	VENV=$(VENV) bash tools/install.sh
	touch $(STAMP)

test: install
	@test -n "$$ATTMASK_DATA" || { echo "make test: set ATTMASK_DATA to the shared data folder (e.g. ../shared/data)" >&2; exit 2; }
	$(PY) -m pytest -q
	$(PY) -m ruff check .

lint: install
	$(PY) -m ruff check .

demo: install
	$(VENV)/bin/attmask-eval demo --out runs/demo

clean-venv:
	rm -rf $(VENV)
