# Two commands set everything up on a fresh machine with Python 3.11 and make:
#   make demo   – creates .venv if missing, installs ssl-bench, runs the digits comparison
#   make test   – creates .venv if missing, installs ssl-bench with the dev and usb extras, runs the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
USB_STAMP := $(VENV)/.installed-usb
# The paper's comparison: the methods of the audio and paper-model stand-in reports.
PAPER_METHODS := supervised,entmin,pimodel,dninv

.PHONY: demo test test-heavy bench reports clean constraints

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The versions installed are constraints.txt's (tested; `make constraints` renews it), so that a release on PyPI
# cannot change what CI tests. Reinstalls when pyproject.toml or constraints.txt changes.
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c constraints.txt
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP)

# The extras the tests cover and the demo does not need: USB (semilearn, +1 min, docs/usb.md), tensorboard, submitit.
$(USB_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[dev,usb,tensorboard,slurm]"
	touch $(USB_STAMP)

# Renews constraints.txt: pyproject.toml's ranges resolved afresh in a new venv with every extra, then frozen.
# Run it after changing a dependency, then `make test` on the result before committing both.
FRESH := .venv-constraints
constraints:
	rm -rf $(FRESH)
	$(PYTHON) -m venv $(FRESH)
	$(FRESH)/bin/python -m pip install --quiet --upgrade pip
	$(FRESH)/bin/python -m pip install --quiet -e ".[dev,usb,tensorboard,slurm]"
	{ sed -n '/^#/p' constraints.txt; $(FRESH)/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(FRESH)

# Runs use one CPU thread each (the protocol's cpu_threads), so --workers 2 fills the 2 cores.
# The demo: six methods on digits, 50 labels, 3 seeds, the paper's protocol (--augment none): the baseline,
# the paper's Π-model and dninv, and one of each later family (EMA teacher, adversarial, strong augmentation).
# All ten take about twice as long (README); `make reports` runs them all into the same folder.
DEMO_METHODS := supervised,pimodel,meanteacher,vat,fixmatch,dninv
# Its report goes to runs/demo-report, not reports/digits-50: that committed report is `make reports`'s (all ten methods).
demo: $(STAMP)
	$(BIN)/ssl-bench sweep --dataset digits --labels 50 --seeds 0,1,2 --methods $(DEMO_METHODS) --out runs/demo --workers 2 --quiet
	$(BIN)/ssl-bench report runs/demo --out runs/demo-report

# A method comparison into one runs folder ($(1) dataset, $(2) labels, $(3) folder): every method, 3 seeds,
# without and with --augment weak, plus the papers' settings where our defaults depart from them
# (MixMatch's lambda_u=75, Pseudo-Label without a threshold: both collapse short runs; docs/methods.md).
# A sweep exits with an error when a run collapsed; those two lines are expected to (`-`: make goes on), and the
# report counts their collapses against the method.
define compare_methods
	$(BIN)/ssl-bench sweep --dataset $(1) --labels $(2) --seeds 0,1,2 --out $(3) --workers 2 --quiet
	$(BIN)/ssl-bench sweep --dataset $(1) --labels $(2) --seeds 0,1,2 --augment weak --out $(3) --workers 2 --quiet
	-$(BIN)/ssl-bench sweep --dataset $(1) --labels $(2) --seeds 0,1,2 --methods mixmatch,pseudolabel -p mixmatch.lambda_u=75 -p pseudolabel.threshold=0 --out $(3) --workers 2 --quiet
	-$(BIN)/ssl-bench sweep --dataset $(1) --labels $(2) --seeds 0,1,2 --methods mixmatch,pseudolabel -p mixmatch.lambda_u=75 -p pseudolabel.threshold=0 --augment weak --out $(3) --workers 2 --quiet
endef

# The reports kept in reports/ (besides the demo's digits-50), regenerated from scratch (see README for the time).
reports: $(STAMP)
	rm -rf runs/demo runs/demo-report runs/digits-grid runs/mnist1d runs/chirps runs/mnist-shaped runs/svhn-shaped
	rm -rf reports/digits-50 reports/digits-50-grid reports/mnist1d-100 reports/chirps-bird10net reports/paper-models-stand-ins
	$(call compare_methods,digits,50,runs/demo)
	$(BIN)/ssl-bench report runs/demo --out reports/digits-50
	$(call compare_methods,mnist1d,100,runs/mnist1d)
	$(BIN)/ssl-bench report runs/mnist1d --out reports/mnist1d-100
	$(BIN)/ssl-bench sweep examples/grids/digits.toml --out runs/digits-grid --workers 2 --quiet
	$(BIN)/ssl-bench report runs/digits-grid --out reports/digits-50-grid
	$(BIN)/ssl-bench sweep --dataset chirps --labels 50 -d snr_db=10 --model bird10net --augment weak \
		--steps 2000 --seeds 0,1,2 --methods $(PAPER_METHODS) --out runs/chirps --workers 2 --quiet
	$(BIN)/ssl-bench report runs/chirps --out reports/chirps-bird10net
	$(BIN)/ssl-bench sweep --dataset digits -d size=28 --labels 50 --model smallcnn --seeds 0,1,2 --methods $(PAPER_METHODS) --out runs/mnist-shaped --workers 2 --quiet
	$(BIN)/ssl-bench sweep --dataset digits -d size=32 -d channels=3 --labels 50 --model largecnn --steps 150 --batch-lb 8 --batch-ulb 8 \
		--seeds 0,1,2 --methods $(PAPER_METHODS) --out runs/svhn-shaped --workers 2 --quiet
	$(BIN)/ssl-bench report runs/mnist-shaped runs/svhn-shaped --out reports/paper-models-stand-ins

# The linter and the formatter check first (seconds; pyproject.toml [tool.ruff]), then the tests.
test: $(USB_STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m pytest -m "not heavy"

# The checks too costly for the suite's 10 minutes (defaults of the U nets and timm resnet18, ≈ 3.5 min; compiled = eager
# on every paper model, ≈ 3.7 min): run before a release.
test-heavy: $(USB_STAMP)
	$(BIN)/python -m pytest -m heavy

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-enable

clean:
	rm -rf runs .pytest_cache .benchmarks
