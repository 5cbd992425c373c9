# VFNet for Detectron2. `make install` then `make test`; see README.md.
#
# Variables (make VAR=value ...):
#   VENV       environment to create or use                  (default: .venv)
#   PYTHON     interpreter that creates VENV                 (default: python3)
#   D2_SOURCE  where detectron2 comes from: auto | git | pypi | /path/to/detectron2
#   WITH_CUDA  CUDA kernels of vfnet._C: auto | 1 | 0
#   FORCE      FORCE=1 redoes every install step
#   TESTS       what `make test` runs                         (default: tests)
#   PYTEST_ARGS extra pytest arguments, e.g. PYTEST_ARGS="-k star -x"

VENV ?= .venv
PYTHON ?= python3
D2_SOURCE ?= auto
WITH_CUDA ?= auto
FORCE ?= 0
TESTS ?= tests
PYTEST_ARGS ?=

VENV_PYTHON := $(VENV)/bin/python

.PHONY: help install test demo gpu-check clean distclean

help:
	@echo "make install    create $(VENV) and install torch, detectron2 and vfnet (builds vfnet._C)"
	@echo "make test       run the test suite"
	@echo "make demo       train VFNet on synthetic shapes on the CPU, evaluate, draw detections"
	@echo "make gpu-check  on an NVIDIA GPU: the ops' CUDA tests and the GPU benchmarks (tools/gpu_check.sh)"
	@echo "make clean      remove build products (the extension is rebuilt by the next install)"
	@echo "make distclean  clean, and remove $(VENV) and .cache"

install:
	$(PYTHON) tools/install.py --venv "$(VENV)" --d2-source "$(D2_SOURCE)" \
		--with-cuda "$(WITH_CUDA)" $(if $(filter 1 yes true,$(FORCE)),--force)

# pytest exits with 5 when it collects no test: report it, but do not fail on it.
test:
	@test -x "$(VENV_PYTHON)" || { echo "$(VENV_PYTHON) not found: run 'make install' first"; exit 1; }
	$(VENV_PYTHON) -m pytest -q $(PYTEST_ARGS) $(TESTS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected"; exit 0; fi; exit $$rc

# The quickstart: synthetic data, CPU training, COCO evaluation, annotated images (see README).
DEMO_ARGS ?=
demo:
	@test -x "$(VENV_PYTHON)" || { echo "$(VENV_PYTHON) not found: run 'make install' first"; exit 1; }
	$(VENV_PYTHON) tools/quickstart.py $(DEMO_ARGS)

# The checks that need a GPU: CUDA tests of the ops, op and model benchmarks (logs in GPU_CHECK_DIR).
GPU_CHECK_DIR ?= gpu-check
gpu-check:
	@test -x "$(VENV_PYTHON)" || { echo "$(VENV_PYTHON) not found: run 'make install' first"; exit 1; }
	PYTHON="$(VENV_PYTHON)" bash tools/gpu_check.sh "$(GPU_CHECK_DIR)"

clean:
	rm -rf build projects/VFNet/vfnet/_C.*.so
	find projects tests tools -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -f "$(VENV)/vfnet-install.txt"

distclean: clean
	rm -rf "$(VENV)" .cache
