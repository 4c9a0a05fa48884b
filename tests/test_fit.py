import json
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tbhcli.cli import app
from tbhcli.errors import TbhError
from tbhcli.evaluation.metrics import evaluate_codes
from tbhcli.hashing import runs
from tbhcli.imaging.featureset import labels_path, save_features
from tbhcli.training.fit import eval_curve, read_log, train
from tbhcli.training.loop import CHECKPOINT_FILE, Trainer

BATCH = 50


def clusters(path, n=200, d=16, k=4, seed=0, spread=0.3):
    """k well-separated non-negative clusters, labels = cluster id."""
    rng = np.random.default_rng(seed)
    centres = rng.random((k, d)) * 4
    labels = rng.integers(0, k, n)
    x = np.maximum(centres[labels] + spread * rng.standard_normal((n, d)), 0)
    return save_features(path, x.astype(np.float32), labels)


@pytest.fixture
def feats(tmp_path):
    return clusters(tmp_path / "db.npy")


def quick(feats, out, **kw):
    small = {"hidden_dim": 64, "continuous_dim": 32}  # the paper's 1024 / 512 are slow for tests
    args = dict(bits=8, steps=20, batch_size=BATCH, out=out, quiet=True, device="cpu")
    args["model_fields"] = small
    return train(feats, **(args | kw))


def weights(run):
    return load_file(str(run / runs.ENCODER_FILE))


def test_run_directory_holds_config_weights_and_log(feats, tmp_path):
    run = quick(feats, tmp_path / "run", seed=3)
    config = json.loads((run / runs.CONFIG_FILE).read_text())
    assert config["method"] == "tbh" and config["bits"] == 8 and config["feature_dim"] == 16
    assert config["seed"] == 3 and config["batch_size"] == BATCH and config["lr"] == 1e-4
    assert config["model"]["decoder_output"] == "relu"  # the features are >= 0
    assert config["model"]["gamma"] == 1.4 and config["variant"] == "code"
    assert config["backbone"] is None and len(config["features_sha256"]) == 64
    rows = read_log(run)
    assert [r["step"] for r in rows] == [10, 20]
    assert {"rec", "adv_b", "adv_z", "actor", "critic"} <= set(rows[0])
    loaded = runs.load_run(run)  # the exported sign encoder loads through the shared contract
    codes = loaded.encode(np.load(feats))
    assert codes.shape == (200, 1) and codes.dtype == np.uint8


def test_seed_makes_training_reproducible(feats, tmp_path):
    a = weights(quick(feats, tmp_path / "a", seed=1))
    b = weights(quick(feats, tmp_path / "b", seed=1))
    c = weights(quick(feats, tmp_path / "c", seed=2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["shared.weight"], c["shared.weight"])


@pytest.mark.slow
def test_resume_equals_a_straight_run(feats, tmp_path):
    straight = quick(feats, tmp_path / "straight", steps=100)
    quick(feats, tmp_path / "split", steps=50)
    with open(tmp_path / "split" / runs.LOG_FILE, "a") as log:
        log.write('{"step": 51, "rec"')  # a row cut short by a kill
    split = quick(feats, tmp_path / "split", steps=100, resume=True)
    a, b = weights(straight), weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_log(straight) == [
        {**r, "time": r2["time"]} for r, r2 in zip(read_log(split), read_log(straight), strict=True)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exception", "sigint"])
def test_interrupt_saves_a_checkpoint_that_resumes_mid_epoch(feats, tmp_path, monkeypatch, how):
    straight = quick(feats, tmp_path / "straight", steps=30)
    real_step = Trainer.train_step

    def interrupted(self):
        if self.step == 17:  # mid-epoch: 200 items are 4 batches of 50
            if how == "exception":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of a step
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quick(feats, tmp_path / "cut", steps=30)
    saved = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert saved["step"] == (17 if how == "exception" else 18)  # a signal lets the step finish
    assert not (tmp_path / "cut" / runs.ENCODER_FILE).exists()  # not a finished run
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = quick(feats, tmp_path / "cut", steps=30, resume=True)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_never_overwritten_silently(feats, tmp_path):
    run = quick(feats, tmp_path / "run")
    with pytest.raises(Exception, match="--resume"):
        quick(feats, run)
    with pytest.raises(Exception, match="settings differ"):
        quick(feats, run, steps=40, resume=True, lr=1e-3)
    quick(feats, run, force=True, seed=5)
    assert json.loads((run / runs.CONFIG_FILE).read_text())["seed"] == 5


def test_resume_without_a_checkpoint_starts_the_run(feats, tmp_path):
    (tmp_path / "killed").mkdir()  # e.g. killed before its first checkpoint
    run = quick(feats, tmp_path / "killed", resume=True)
    assert (run / runs.ENCODER_FILE).is_file()
    itq = quick(feats, tmp_path / "itq", method="itq")
    quick(feats, itq, method="itq", resume=True)  # a baseline is simply refitted


def test_corrupt_checkpoint_or_meta_is_a_user_error(feats, tmp_path):
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(TbhError, match="cannot read the checkpoint"):
        quick(feats, tmp_path / "killed", resume=True)
    (tmp_path / "db.meta.json").write_text("{not json")
    with pytest.raises(TbhError, match="db.meta.json"):
        quick(feats, tmp_path / "run")


@pytest.mark.slow
def test_tbh_learns_codes_that_retrieve_the_clusters(tmp_path):
    db = clusters(tmp_path / "db.npy", n=400, seed=0)
    q = clusters(tmp_path / "q.npy", n=100, seed=0)  # same centres (same seed), new noise
    q_x = np.load(q) + np.random.default_rng(1).normal(0, 0.05, (100, 16)).astype(np.float32)
    np.save(q, np.maximum(q_x, 0))
    run = quick(
        db, tmp_path / "run", bits=16, steps=200, batch_size=100, lr=3e-3, eval_every=200,
        eval_queries=q,
    )  # fmt: skip
    score = eval_curve(run)[-1][1]
    loaded = runs.load_run(run)
    again = evaluate_codes(
        loaded.encode(np.load(db)), np.load(labels_path(db)), loaded.encode(np.load(q)),
        np.load(labels_path(q)), ("map@1000",),
    )["map@1000"]  # fmt: skip
    assert score == pytest.approx(again)
    assert score > 0.6  # chance is about 0.25 for 4 balanced clusters


@pytest.mark.parametrize("method", ["lsh", "pcah", "itq"])
def test_baselines_share_the_run_format_and_are_deterministic(feats, tmp_path, method):
    a = quick(feats, tmp_path / "a", method=method, bits=8, seed=0)
    b = quick(feats, tmp_path / "b", method=method, bits=8, seed=0)
    config = json.loads((a / runs.CONFIG_FILE).read_text())
    assert config["method"] == method and config["feature_dim"] == 16 and "model" not in config
    codes_a = runs.load_run(a).encode(np.load(feats))
    assert codes_a.shape == (200, 1)
    assert np.array_equal(codes_a, runs.load_run(b).encode(np.load(feats)))


# ---- CLI ----------------------------------------------------------------------------------------


def cli(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


@pytest.mark.slow
def test_cli_trains_tbh_and_a_baseline(feats, tmp_path):
    res = cli(feats, "--bits", 8, "--steps", 10, "--batch-size", BATCH, "--out", tmp_path / "t")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t" / runs.ENCODER_FILE).is_file()
    args = ("--bits", 8, "--steps", 10, "--batch-size", BATCH, "--gamma", 8)
    res = cli(feats, *args, "--variant", "paper", "--out", tmp_path / "g")
    assert res.exit_code == 0, res.output
    assert runs.load_config(tmp_path / "g")["model"]["gamma"] == 8  # --gamma beats the variant's
    res = cli(feats, "--method", "itq", "--bits", 8, "--out", tmp_path / "i")
    assert res.exit_code == 0, res.output


def bad_inputs(tmp_path):
    np.save(tmp_path / "flat.npy", np.ones(10, np.float32))
    nan = np.ones((100, 4), np.float32)
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "complex.npy", np.ones((100, 4), np.complex64))
    np.save(tmp_path / "text.npy", np.full((100, 4), "x"))
    save_features(tmp_path / "few.npy", np.ones((30, 4)))
    save_features(tmp_path / "mismatch.npy", np.ones((100, 4)), np.zeros(99, np.int64))
    save_features(tmp_path / "ok.npy", np.random.default_rng(0).random((100, 4)))
    return {
        "missing": ([tmp_path / "missing.npy"], "not found"),
        "1-D": ([tmp_path / "flat.npy"], "2-D"),
        "NaN": ([tmp_path / "nan.npy"], "NaN"),
        "complex": ([tmp_path / "complex.npy"], "real numbers"),
        "text": ([tmp_path / "text.npy"], "real numbers"),
        "bits 12": ([tmp_path / "ok.npy", "--bits", 12], "multiple of 8"),
        "N < batch": ([tmp_path / "few.npy"], "fewer than --batch-size"),
        "labels": ([tmp_path / "mismatch.npy"], "99 rows"),
        "eval without queries": ([tmp_path / "ok.npy", "--eval-every", 5], "--eval-queries"),
        "batch 0": ([tmp_path / "ok.npy", "--batch-size", 0], "--batch-size"),
        "lr 0": ([tmp_path / "ok.npy", "--lr", 0], "--lr"),
        "gamma 0": ([tmp_path / "ok.npy", "--gamma", 0], "--gamma"),
    }


def test_cli_bad_input_is_one_line_and_exit_1(tmp_path):
    for name, (args, words) in bad_inputs(tmp_path).items():
        res = cli(*args, "--out", tmp_path / "runs" / name.replace(" ", "_"))
        assert res.exit_code == 1, (name, res.output)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, res.output)
        assert words in lines[0], (name, res.output)
