"""The ``tiny_tslm`` model shipped inside the package (``specdifftree/assets/tiny_tslm``).

A ~4M-parameter Llama trained on the in-sample parts of M1, M3 and Tourism by
``experiments/train_tiny_tslm.py``; see ``MODEL_CARD.md`` in that folder. It is an ordinary
mlx-lm folder, loaded by ``mlx_lm.load`` like any other model, and needs no network.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ModelError

REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def embedded_model_folder() -> Path:
    """The folder of the shipped ``tiny_tslm`` model; ModelError when the install lacks it."""
    folder = Path(__file__).resolve().parents[2] / "assets" / "tiny_tslm"
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"the built-in model tiny_tslm is incomplete in {folder} (missing "
                         f"{', '.join(missing)}): reinstall specdifftree, or retrain it with "
                         "experiments/train_tiny_tslm.py --install")
    return folder
