"""Model presets, LoRA adapters (model.adapter_path) and user config dirs (hydra.searchpath)."""

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from specdifftree.config import compose, conf_dir
from specdifftree.errors import ConfigError, ModelError

PRESETS = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))
HUB_PRESETS = [p for p in PRESETS if p not in ("hf", "tiny_random", "tiny_tslm")]


def test_presets_compose_with_hub_ids_and_instruct_flags():
    assert {"llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "qwen2.5-0.5b-instruct",
            "qwen2.5-1.5b-instruct", "gemma-3-1b-it"} <= set(HUB_PRESETS)
    for name in HUB_PRESETS:
        m = compose([f"model={name}"]).model
        assert m.path.startswith("mlx-community/") and m.instruct is True and m.name == name
        assert "adapter_path" in m
    assert compose(["model=llama-3.2-1b-instruct"]).model.path == "mlx-community/Llama-3.2-1B-Instruct-4bit"
    for name in ("tiny_tslm", "tiny_random"):
        assert compose([f"model={name}"]).model.instruct is False
    assert compose([]).prompt.chat is None  # automatic: on for instruct presets only


@pytest.mark.parametrize("name", ["llama-3.2-1b-instruct", "gemma-3-1b-it"])
def test_hub_preset_offline_fails_with_the_clear_message(name, monkeypatch):
    import huggingface_hub.constants as hc

    from specdifftree.backend.mlx.loader import load

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", "/nonexistent-specdifftree-hf-home")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", "/nonexistent-specdifftree-hf-home/hub")
    with pytest.raises(ModelError, match="could not be fetched from the Hugging Face Hub .*set model.path"):
        load(compose([f"model={name}"]).model)


def test_user_config_dir_through_hydra_searchpath(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(
        "# @package model\nname: mine\nbuiltin: tiny_random\ninit_seed: 3\ndtype: float32\n"
        "instruct: false\nadapter_path: null\n")
    cfg = compose([f"hydra.searchpath=[file://{tmp_path}]", "model=mine"])
    assert cfg.model.name == "mine" and cfg.model.init_seed == 3
    assert compose([f"hydra.searchpath=[file://{tmp_path}]"]).model.name == "tiny_tslm"


def test_prompt_config_values_are_checked():
    from specdifftree.config import validate

    with pytest.raises(ConfigError, match="prompt.chat"):
        validate(compose(["prompt.chat=maybe"]))
    with pytest.raises(ConfigError, match="history"):
        validate(compose(["prompt.instruction=forecast please"]))
    with pytest.raises(ConfigError, match="only .history. and .horizon."):
        validate(compose(["prompt.instruction='{history} {n}'"]))
    validate(compose(["prompt.instruction='Next {horizon}: {history}'", "prompt.chat=true"]))


def _write_adapter(model_dir: Path, out: Path, seed: int = 1) -> Path:
    """A LoRA adapter folder as mlx_lm.lora writes it, with non-zero random B matrices."""
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = mlx_lm.load(str(model_dir))
    params = {"rank": 4, "scale": 10.0, "dropout": 0.0, "keys": ["self_attn.q_proj", "self_attn.v_proj"]}
    linear_to_lora_layers(model, 2, params)
    mx.random.seed(seed)
    weights = {k: (mx.random.normal(v.shape) * 0.5 if k.endswith("lora_b") else v)
               for k, v in tree_flatten(model.trainable_parameters()) if k.rsplit(".", 1)[-1] in ("lora_a", "lora_b")}
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), weights)
    (out / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": params}))
    return out


def test_adapter_path_is_applied_and_checked(tmp_path):
    from specdifftree.backend.mlx.loader import load
    from specdifftree.backend.mlx.session import Session

    base_cfg = {"builtin": "tiny_random", "dtype": "float32"}
    base = load(OmegaConf.create(base_cfg))
    adapter = _write_adapter(Path(base.path), tmp_path / "adapters")
    tuned = load(OmegaConf.create({**base_cfg, "adapter_path": str(adapter)}))
    assert tuned.adapter_path == str(adapter)
    prompt = base.encode_prompt("1.00, 2.00, 3.00, ")
    lp_base = Session(base, prompt).logprobs([()])[0]
    lp_tuned = Session(tuned, prompt).logprobs([()])[0]
    assert np.abs(lp_base - lp_tuned).max() > 1e-3  # the adapters change the model
    with pytest.raises(ModelError, match="adapter_path=.*no such folder"):
        load(OmegaConf.create({**base_cfg, "adapter_path": str(tmp_path / "missing")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no adapter_config.json"):
        load(OmegaConf.create({**base_cfg, "adapter_path": str(tmp_path / "empty")}))
