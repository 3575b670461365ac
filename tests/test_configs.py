"""Every shipped config file composes and builds: each method, reward, dataset, task, model and
logger yaml under specdifftree/conf is picked by its group override and turned into its object
(methods, rewards, data sources and tasks instantiated, datasets loaded where their data ships or
is staged, loggers built).
A new yaml is covered without touching this file."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from specdifftree.config import compose, conf_dir
from specdifftree.errors import ConfigError

CONF = Path(__file__).resolve().parent.parent / "specdifftree" / "conf"


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_the_tests_read_the_package_config():
    assert conf_dir() == CONF
    for group in ("method", "reward", "dataset", "task", "model", "logger", "sweep"):
        assert names(group), group


@pytest.mark.parametrize("name", names("method"))
def test_every_method_config_instantiates(name):
    from specdifftree.runner import build_method
    from specdifftree.search.build import settings

    cfg = compose([f"method={name}"])
    method = build_method(cfg.method)
    assert method.name == name
    # every key of the yaml is an argument of the class or one the runner reads
    own = set(OmegaConf.to_container(cfg.method)) - {"_target_", "name", "answer"}
    assert own <= set(settings(type(method)))
    with pytest.raises(ConfigError, match=rf"method\.no_such_key is not a setting of method={name}"):
        build_method({**OmegaConf.to_container(cfg.method), "no_such_key": 1})


@pytest.mark.parametrize("name", names("reward"))
def test_every_reward_config_builds_and_scores(name):
    from specdifftree.rewards.build import build_reward
    from specdifftree.tasks.forecasting import ForecastTask
    from specdifftree.tasks.serialize import Serializer
    from specdifftree.tasks.series import Series

    cfg = compose([f"reward={name}"])
    reward = build_reward(cfg.reward)
    assert reward.name == cfg.reward.name
    assert reward.oracle == ("oracle" in reward.name)
    x = 100 + 10 * np.sin(2 * np.pi * np.arange(60) / 12)
    s = Series("s", x, x[:6] + 1.0, 6, 12)
    ctx = ForecastTask(Serializer()).reward_context(s)
    if name == "caption_similarity":  # scores captions against the reference the task provides
        ctx.extra = {"reference": "an upward trend with a yearly season"}
    out = reward(np.stack([x[:6], x[:6] * 2]), ["a trend", "a season"], np.ones(2), ctx)
    assert out.shape == (2,) and np.isfinite(out).all()


FCOMP = [n for n in names("dataset")
         if OmegaConf.load(CONF / "dataset" / f"{n}.yaml")._target_.endswith("FcompdataSource")]


@pytest.mark.parametrize("name", names("dataset"))
def test_every_dataset_config_builds_its_source_and_task(name):
    """Each dataset yaml names a data source class (``_target_``, every other key one of its
    arguments, a runner key or read by the task) and a task (``dataset.task``), both built;
    the task has the runner's protocol; a misspelt key is one line naming it."""
    from specdifftree.tasks.base import Task
    from specdifftree.tasks.build import RUNNER_KEYS, build_source, build_task, settings

    cfg = compose([f"dataset={name}"])
    assert cfg.dataset.name == name
    source = build_source(cfg.dataset)
    assert callable(source.load)
    task = build_task(cfg.dataset)
    for method in [m for m in dir(Task) if not m.startswith("_")]:
        assert callable(getattr(task, method)), method
    raw = OmegaConf.to_container(cfg.dataset)
    extra = set(raw) - set(RUNNER_KEYS) - set(settings(type(source)))
    # what is not the source's is the task's: read through ${dataset.<key>}
    assert all(f"${{dataset.{k}}}" in str(raw["task"]) for k in extra), extra
    with pytest.raises(ConfigError, match=rf"dataset\.no_such_key is not a setting of {type(source).__name__}"):
        build_source({**raw, "no_such_key": 1})
    bad_task = {**raw, "task": {**OmegaConf.to_container(cfg.dataset.task, resolve=True), "no_such_key": 1}}
    with pytest.raises(ConfigError, match=rf"dataset\.task\.no_such_key is not a setting of {type(task).__name__}"):
        build_task(OmegaConf.create(bad_task))


@pytest.mark.parametrize("name", names("task"))
def test_every_task_config_is_used_by_a_dataset(name):
    used = {OmegaConf.load(CONF / "dataset" / f"{d}.yaml").defaults[0]["/task@task"]
            for d in names("dataset")}
    assert name in used


@pytest.mark.parametrize("name", FCOMP)
def test_every_bundled_dataset_loads(name):
    from specdifftree.tasks.sources import load_series

    series = load_series(compose([f"dataset={name}"]).dataset)
    assert len(series) > 100
    s = series[0]
    assert s.horizon >= 1 and s.period >= 1 and len(s.y) == s.horizon


@pytest.mark.parametrize("name", ["m4_hourly", "m4_weekly"])
def test_the_staged_m4_datasets_load(name, m4_root):
    from specdifftree.tasks.sources import load_series

    cfg = compose([f"dataset={name}", f"dataset.root={m4_root}"])
    series = load_series(cfg.dataset)
    assert len(series) == {"m4_hourly": 414, "m4_weekly": 359}[name]


@pytest.mark.parametrize("name", names("model"))
def test_every_model_config_composes(name):
    cfg = compose([f"model={name}"])
    if name == "hf":  # the path (and the name derived from it) is the user's to give
        assert OmegaConf.is_missing(cfg.model, "path")
        return
    assert cfg.model.name == name
    if cfg.model.get("builtin"):
        return
    # a hub preset names an mlx-community repository ("owner/name")
    assert str(cfg.model.path).count("/") == 1


@pytest.mark.parametrize("name", names("logger"))
def test_every_logger_config_builds(name):
    from specdifftree.loggers import build_logger

    logger = build_logger(compose([f"logger={name}"]).logger)
    assert hasattr(logger, "log_sample") and hasattr(logger, "finish")


# ------------------------------------------------------------- the budget and the renamed knobs
@pytest.mark.parametrize("overrides,rollouts,tokens", [
    ([], 20, None),                                    # the seed's 20 rollouts per sample
    (["budget.tokens=500"], None, 500),                # a token budget alone: tokens only
    (["budget.tokens=500", "budget.rollouts=7"], 7, 500),  # both given: both limit
    (["budget.rollouts=3"], 3, None),
    (["budget.rollouts=null"], None, None),            # nothing: the methods say so (test_search_methods)
])
def test_budget_rollouts_default_follows_the_token_budget(overrides, rollouts, tokens):
    cfg = compose(overrides)
    assert cfg.budget.rollouts == rollouts and cfg.budget.tokens == tokens
    flat = OmegaConf.to_container(cfg, resolve=True)["budget"]
    assert flat == {"rollouts": rollouts, "tokens": tokens}


#: what each sweep preset's budget meant before the rename (rollouts, tokens); None: swept
SWEEP_BUDGETS = {"methods_x_seeds": (20, None), "budget_scaling": (1000000, None),
                 "anytime": (1000000, 16000), "smoke": (20, None)}


@pytest.mark.parametrize("name", names("sweep"))
def test_every_sweep_preset_composes_with_its_budget(name):
    cfg = compose([f"+sweep={name}"], return_hydra_config=True)
    rollouts, tokens = SWEEP_BUDGETS[name]
    assert cfg.budget.rollouts == rollouts
    if name != "budget_scaling":  # budget_scaling sweeps budget.tokens
        assert cfg.budget.tokens == tokens
    else:
        for t in str(cfg.hydra.sweeper.params["budget.tokens"]).split(","):
            assert compose([f"+sweep={name}", f"budget.tokens={t}"]).budget.rollouts == rollouts


@pytest.mark.parametrize("name", names("method"))
def test_no_method_uses_the_colliding_names(name):
    """Issue 11: λ is `lam`, the returned draws are `num_draws`, the rollout budget is
    budget.rollouts; `temperature`, `num_samples` and `num_rollouts` mean nothing in method/."""
    from specdifftree.runner import build_method
    from specdifftree.search.build import RENAMED, settings

    cfg = compose([f"method={name}"])
    assert not set(cfg.method) & set(RENAMED)
    assert not set(settings(type(build_method(cfg.method)))) & set(RENAMED)


def test_the_dataset_cache_key_is_the_source_alone():
    """Sweep jobs share loaded data: the key is the source's arguments (and ids_file), so the
    task's keys (prompt.*, dataset.context_length) and subset_seed do not reload the series."""
    from specdifftree.modelcache import dataset_key

    base = dataset_key(compose(["dataset=m3_monthly"]).dataset)
    for same in (["dataset.context_length=50"], ["prompt.decimals=3"], ["dataset.subset_seed=4"]):
        assert dataset_key(compose(["dataset=m3_monthly", *same]).dataset) == base, same
    ids = CONF.parent / "assets" / "tiny_tslm" / "heldout_series.txt"
    for other in (["dataset=m3_yearly"], ["dataset=m3_monthly", f"+dataset.ids_file={ids}"]):
        assert dataset_key(compose(other).dataset) != base, other
