# SpecDiffTree — common commands. `make setup` once, then `make test` / `make run`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Runs a command with the fast BLAS preloaded on Linux (no-op elsewhere).
WITH_BLAS := $(PY) -m specdifftree.backend.mlx.blas exec --

.PHONY: setup setup-cuda blas test run bench report clean

setup: blas
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m specdifftree.backend.mlx.blas check || true

# NVIDIA GPU on Linux: the same environment with MLX's CUDA build instead of mlx-cpu. Both wheels
# ship mlx/lib/libmlx.so: mlx-cpu is removed and the CUDA wheel reinstalled so its library stays.
setup-cuda:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,cuda]'
	$(PY) -m pip uninstall -q -y mlx-cpu
	$(PY) -m pip install -q --force-reinstall --no-deps "mlx-cuda-13==$$($(PY) -c 'from importlib.metadata import version; print(version("mlx"))')"
	$(PY) -c "from specdifftree.backend.mlx.device import describe; print(describe())"

# Debian/Ubuntu: install OpenBLAS (the mlx-cpu wheel only ships reference BLAS). Needs root or
# passwordless sudo; without them (or without apt-get, or when the install fails) it prints one
# line on how to get OpenBLAS and `make setup` goes on: everything runs, CPU matmuls are slower.
# (The OpenBLAS inside numpy's wheel cannot stand in: it exports prefixed ILP64 symbols such as
# scipy_cblas_sgemm64_, not the cblas_sgemm that MLX binds to.)
OPENBLAS_HINT := install it for fast CPU matmuls with 'sudo apt-get install libopenblas0-pthread' \
(Debian/Ubuntu) or set SPECDIFFTREE_OPENBLAS=/path/to/libopenblas.so.0; setup goes on with MLX's \
slower reference BLAS
blas:
	@if [ "$$(uname -s)" = Linux ] && [ -z "$$SPECDIFFTREE_OPENBLAS" ] \
	    && ! ldconfig -p 2>/dev/null | grep -q 'libopenblas.so.0'; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then SUDO="sudo -n"; \
	  else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then \
	    echo "OpenBLAS: not found, and no root or sudo to install it: $(OPENBLAS_HINT)"; \
	  elif ! command -v apt-get >/dev/null 2>&1; then \
	    echo "OpenBLAS: not found (no apt-get here): $(OPENBLAS_HINT)"; \
	  elif ! { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libopenblas0-pthread; } \
	      >/dev/null 2>&1; then \
	    echo "OpenBLAS: apt-get could not install it: $(OPENBLAS_HINT)"; \
	  fi; \
	fi

test:
	$(WITH_BLAS) $(PY) -m pytest -q

run:
	$(PY) -m specdifftree $(ARGS)

# Performance benchmark (writes outputs/bench/bench.json); BENCH_ARGS="--shape medium --scaling"
bench:
	$(WITH_BLAS) $(PY) experiments/bench_perf.py $(BENCH_ARGS)

# Report over a run or multirun folder: make report DIR=outputs/multirun/<date>/<time>
report:
	@test -n "$(DIR)" || { echo "usage: make report DIR=<run or multirun dir>"; exit 2; }
	$(PY) -m specdifftree.report $(DIR)

clean:
	rm -rf .pytest_cache .hypothesis build *.egg-info
