# Two commands do all the set-up from a fresh clone: `make demo` and `make test`.
# Both create .venv on first use (pip; torch and torchvision from the registry).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.selfsup-installed

.PHONY: demo test test-fast bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev,text,domain,onnx,audio,video]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/selfsup demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/cifar10_simclr.py

clean-venv:
	rm -rf $(VENV)
