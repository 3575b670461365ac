# SpecDiffTree — common commands. `make setup` once, then `make test` / `make run`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Runs a command with the fast BLAS preloaded on Linux (no-op elsewhere).
WITH_BLAS := $(PY) -m specdifftree.blas exec --

.PHONY: setup setup-cuda blas test run bench report clean

setup: blas
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m specdifftree.blas check

# NVIDIA GPU on Linux: the same environment with MLX's CUDA build instead of mlx-cpu. Both wheels
# ship mlx/lib/libmlx.so: mlx-cpu is removed and the CUDA wheel reinstalled so its library stays.
setup-cuda:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,cuda]'
	$(PY) -m pip uninstall -q -y mlx-cpu
	$(PY) -m pip install -q --force-reinstall --no-deps "mlx-cuda-13==$$($(PY) -c 'from importlib.metadata import version; print(version("mlx"))')"
	$(PY) -c "from specdifftree.backend.device import describe; print(describe())"

# Debian/Ubuntu: install OpenBLAS (the mlx-cpu wheel only ships reference BLAS).
blas:
	@if [ "$$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q 'libopenblas.so.0'; then \
	  if command -v apt-get >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libopenblas0-pthread; \
	  else echo "warning: install OpenBLAS (libopenblas.so.0) for fast fp32 matmuls on CPU"; fi; \
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
