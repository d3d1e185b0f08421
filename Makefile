# fpwb: every command creates .venv when missing (Python 3.11, pinned torch from local disk).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# make lab PORT=8899 IP=0.0.0.0 (IP: 0.0.0.0 to reach JupyterLab from outside a container)
PORT   ?= 8888
IP     ?= 127.0.0.1

.PHONY: install test data report lab bench figures sweep clean readme-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[test]' $(TORCH_PINS)
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Passive OpenMP waits: numba's idle worker threads otherwise spin and slow the torch calls that
# follow a compiled kernel in the same process (measured 40x on a loaded 2-core machine).
test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/layers.py --out benchmarks/results/layers.txt

sweep: $(STAMP)
	$(PY) -m fpwb.cli sweep notebooks/05_hyperparameters.ipynb --grid examples/grid_hyperparameters.yaml

clean:
	rm -rf $(VENV) reports build *.egg-info

# Fashion-MNIST for the notebooks that default to it: Debian's package where apt-get can install
# it (offline-friendly); elsewhere fpwb.data.load reads data/ or downloads through torchvision.
data:
	@test -d /usr/share/datasets/fashion-mnist || { command -v apt-get >/dev/null && \
	  { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; }; } || \
	  echo "Fashion-MNIST not installed: notebooks 06-09 will look in data/ or try to download it"

report: $(STAMP) data
	OMP_WAIT_POLICY=PASSIVE $(PY) -m fpwb.cli report

# JupyterLab on the repository, also as root; prints the URL (with its token) to open.
lab: $(STAMP)
	$(PY) -m fpwb.runs.lab --port $(PORT) --ip $(IP)

# The README numbers (marked <!-- notebook:key -->) that differ from the report's results.json.
readme-check: $(STAMP)
	$(PY) -m fpwb.runs.readme_check README.md --report reports

figures: $(STAMP)
	$(PY) -m fpwb.cli figures --report reports --dest docs/figures
