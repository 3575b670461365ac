"""logger=wandb in offline mode (no account, no network): what lands in the W&B run files."""

import json
import os
import struct
import subprocess
import sys

import pytest

from conftest import REPO, run_cli

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")


def wandb_records(path):
    """The protobuf records of an offline ``run-<id>.wandb`` file (W&B's LevelDB-style log)."""
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        if kind in (1, 4):  # full record, or last chunk of one
            rec = pb.Record()
            rec.ParseFromString(pending + chunk if kind == 4 else chunk)
            pending = b""
            yield rec
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk


def read_run(run_dir):
    files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    run, history, summary = None, [], {}
    for rec in wandb_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
        elif kind == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                            for i in rec.history.item})
        elif kind == "summary":
            for u in rec.summary.update:
                summary["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
    return run, history, summary


def test_offline_multirun_logs_config_samples_summary_and_figures(tmp_path):
    sweep = tmp_path / "sweep"
    # no WANDB_MODE in the environment: offline comes from conf/logger/wandb.yaml
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "specdifftree", "--multirun", "logger=wandb",
                          "logger.project=sdt-test", "method=naive2", "seed=0,1", "num_samples=3",
                          f"hydra.sweep.dir={sweep}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    groups = set()
    for job in ("0", "1"):
        run, history, summary = read_run(sweep / job)
        groups.add(run.run_group)
        assert run.project == "sdt-test" and "seed=" + job in run.display_name
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        assert config["method"]["name"] == "naive2" and config["seed"] == int(job)
        samples = [h for h in history if "sample/smape" in h]
        results = [json.loads(x) for x in (sweep / job / "results.jsonl").read_text().splitlines()]
        assert [h["sample/smape"] for h in samples] == pytest.approx([r["smape"] for r in results])
        assert [h["_step"] for h in samples] == [0, 1, 2]
        assert summary["owa"] == pytest.approx(1.0) and summary["n"] == 3
        images = {k.split("/")[1] for k in summary if k.startswith("figures/")}
        assert {"reward_vs_tokens", "accuracy", "forecasts"} <= images
        assert list((sweep / job / "wandb").glob("offline-run-*/files/media/images/figures/*.png"))
    assert groups == {"/".join(sweep.parts[-3:])}  # both jobs in one group: the sweep dir


def test_wandb_errors_never_stop_a_run(tmp_path):
    # an invalid mode makes wandb.init fail; a file where W&B wants its folder fails too
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "blocker").write_text("")
    for name, extra in (("a", "logger.mode=not-a-mode"), ("b", f"logger.dir={tmp_path}/b/blocker")):
        run_dir = tmp_path / name / "run"
        out = run_cli("logger=wandb", extra, "method=naive2", "num_samples=2",
                      f"hydra.run.dir={run_dir}")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "W&B init failed" in out.stdout + out.stderr
        assert len((run_dir / "results.jsonl").read_text().splitlines()) == 2


def test_restarted_run_continues_its_wandb_run_and_records_the_commit(tmp_path):
    from specdifftree.loggers.wandb import run_id

    run_dir = tmp_path / "run"
    args = ("logger=wandb", "method=naive2", "num_samples=2", f"hydra.run.dir={run_dir}")
    for _ in range(2):  # the second start resumes the run dir
        out = run_cli(*args)
        assert out.returncode == 0, out.stderr[-2000:]
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2
    runs = [next(r.run for r in wandb_records(f) if r.WhichOneof("record_type") == "run")
            for f in files]
    assert runs[0].run_id == runs[1].run_id == run_id(run_dir)
    config = {u.key: json.loads(u.value_json) for u in runs[0].config.update}
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert config["git_commit"].split("+")[0] == head
    other = tmp_path / "other"
    out = run_cli(*args[:-1], f"hydra.run.dir={other}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert run_id(other) != run_id(run_dir)
    f = next(other.glob("wandb/offline-run-*/run-*.wandb"))
    assert next(r.run for r in wandb_records(f) if r.WhichOneof("record_type") == "run").run_id \
        == run_id(other)
