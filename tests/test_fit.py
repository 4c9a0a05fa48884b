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
from tbhcli.training.fit import eval_curve, read_log, summary, train, val_curve
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
    assert config["seed"] == 3 and config["batch_size"] == BATCH and config["lr"] == 1e-3
    assert config["model"]["decoder_output"] == "relu"  # the features are >= 0
    assert config["model"]["gamma"] == 8 and config["variant"] == "code"  # the fast preset's
    assert "bits" not in config["model"] and "feature_dim" not in config["model"]  # stored once
    assert config["backbone"] is None and len(config["features_sha256"]) == 64
    assert config["validation"]["held_out"] == 20 and config["validation"]["train"] == 180
    assert config["stop"] is None  # --steps trains exactly that many
    rows = [r for r in read_log(run) if "rec" in r]
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

    def steady(run):  # the log without wall-clock times
        rows = [r for r in read_log(run) if "summary" not in r]
        return [{k: v for k, v in r.items() if k != "time"} for r in rows]

    assert steady(straight) == steady(split)
    assert sum("summary" in r for r in read_log(split)) == 1  # the 50-step run's summary is gone


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
    with pytest.raises(TbhError, match="resume=True to continue it, force=True to overwrite"):
        quick(feats, run)
    with pytest.raises(Exception, match="settings differ"):
        quick(feats, run, steps=40, resume=True, lr=1e-2)
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


def test_train_returns_the_run_with_its_scores_and_verdict(feats, tmp_path):
    run = quick(feats, tmp_path / "run")
    assert run.path == tmp_path / "run" and os.fspath(run) == str(tmp_path / "run")
    assert run.scores == summary(run)["scores"] and set(run.scores) == {"tbh", "itq"}
    assert run.kept == "tbh" and run.verdict.startswith(("TBH", "ITQ"))
    document = json.loads(run.to_json())
    assert document["schema"] == "tbh.train/1" and document["run"] == str(run.path)


def test_python_errors_name_arguments_and_the_cli_names_flags(feats, tmp_path):
    with pytest.raises(TbhError, match=r"^batch_size must be at least 1 \(got 0\)"):
        train(feats, batch_size=0)
    with pytest.raises(TbhError, match=r"^unknown preset 'slow'"):
        train(feats, preset="slow")
    with pytest.raises(TypeError, match="unknown settings bitz"):
        train(feats, bitz=8)
    res = cli(feats, "--batch-size", 0, "--out", tmp_path / "x")
    assert res.exit_code == 1 and "error: --batch-size must be at least 1" in res.output


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
        "gamma inf": ([tmp_path / "ok.npy", "--gamma", "inf"], "--gamma"),
        "lr inf": ([tmp_path / "ok.npy", "--lr", "inf"], "--lr"),
        "lr nan": ([tmp_path / "ok.npy", "--lr", "nan"], "--lr"),
        "lr 1e4": ([tmp_path / "ok.npy", "--lr", "1e4"], "--lr"),
        "bits 1e12": ([tmp_path / "ok.npy", "--bits", 10**12], "from 8 to 4096"),
        "val fraction 1": ([tmp_path / "ok.npy", "--val-fraction", 1], "--val-fraction"),
        "auto without validation": (
            [tmp_path / "ok.npy", "--method", "auto", "--val-fraction", 0],
            "--val-fraction",
        ),
    }


def test_cli_bad_input_is_one_line_and_exit_1(tmp_path):
    for name, (args, words) in bad_inputs(tmp_path).items():
        out = tmp_path / "runs" / name.replace(" ", "_")
        res = cli(*args, "--out", out)
        assert res.exit_code == 1, (name, res.output)
        assert not out.exists(), name  # refused before anything is written
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, res.output)
        assert words in lines[0], (name, res.output)


def test_cli_prints_tbh_against_itq_and_json_has_both(feats, tmp_path):
    args = (feats, "--bits", 8, "--steps", 10, "--batch-size", BATCH)
    res = cli(*args, "--out", tmp_path / "t")
    assert res.exit_code == 0, res.output
    assert "TBH" in res.output and "ITQ" in res.output and "neighbour recall@100" in res.output
    res = cli(*args, "--out", tmp_path / "j", "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["schema"] == "tbh.train/1" and result["kept"] == "tbh"
    assert set(result["scores"]) == {"tbh", "itq"} and result["steps"] == 10
    assert result["scores"] == summary(tmp_path / "j")["scores"]  # also in the run's log
    assert result["verdict"].startswith(("TBH", "ITQ"))


# ---- validation, early stopping, divergence, --method auto ---------------------------------------


@pytest.mark.slow
def test_default_training_stops_at_its_plateau_and_keeps_the_best_weights(tmp_path):
    db = clusters(tmp_path / "db.npy", n=400, seed=0)  # easy: held-out recall plateaus early
    run = quick(
        db, tmp_path / "run", steps=None, lr=3e-3, batch_size=100, val_every=10, patience=30,
        min_steps=20,
    )  # fmt: skip
    result = summary(run)
    curve = val_curve(run)
    assert result["stopped"] == "plateau" and result["steps"] < 4000
    best_step, best = max(curve, key=lambda c: (c[1]["recall@100"], -c[0]))
    assert result["best_step"] == best_step
    assert result["steps"] - best_step >= 30  # patience, in steps
    # the written encoder is the best one, as validation scores it again
    assert result["scores"]["tbh"] == pytest.approx(best)
    config = runs.load_config(run)
    assert config["stop"] == {"patience": 30, "min_steps": 20} and config["steps"] == 4000
    # the stopping step depends on the float order, so on torch's thread count: it is recorded
    assert result["threads"] == torch.get_num_threads()


@pytest.mark.slow
def test_stopping_is_resumable(tmp_path, monkeypatch):
    db = clusters(tmp_path / "db.npy", n=400, seed=0)
    args = dict(steps=None, lr=3e-3, batch_size=100, val_every=10, patience=30, min_steps=20)
    straight = quick(db, tmp_path / "straight", **args)
    real_step = Trainer.train_step

    def interrupted(self):
        if self.step == 25:  # after a first best, before the stop
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quick(db, tmp_path / "cut", **args)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    resumed = quick(db, tmp_path / "cut", resume=True, **args)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert summary(resumed)["best_step"] == summary(straight)["best_step"]


def test_nan_loss_stops_training_with_one_line_and_no_run(feats, tmp_path, monkeypatch):
    real_step = Trainer.train_step

    def poisoned(self):
        terms = real_step(self)
        if self.step == 5:
            terms["actor"] = torch.tensor(float("nan"))
        return terms

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    res = cli(feats, "--bits", 8, "--steps", 20, "--batch-size", BATCH, "--out", tmp_path / "n")
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "loss became NaN at step 5" in lines[0] and "--lr" in lines[0]
    assert not (tmp_path / "n").exists()


def test_overflowing_features_diverge_at_step_1(tmp_path):
    x = np.random.default_rng(0).random((200, 16)).astype(np.float32) * 1e20
    feats = save_features(tmp_path / "huge.npy", x)
    with pytest.raises(TbhError, match="loss became inf at step 1"):
        quick(feats, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_exploding_reconstruction_warns_once(feats, tmp_path):
    run = quick(feats, tmp_path / "run", steps=30, lr=0.3)  # measured: rec x275 at step 2
    warnings = summary(run)["warnings"]
    assert len(warnings) == 1 and "grew" in warnings[0] and "lower --lr" in warnings[0]
    assert sum("warning" in r for r in read_log(run)) == 1


def test_auto_keeps_the_method_with_the_best_held_out_score(feats, tmp_path):
    run = quick(feats, tmp_path / "auto", method="auto", steps=2)  # 2 steps: TBH is still poor
    result = summary(run)
    assert set(result["scores"]) == {"tbh", "itq", "pcah", "lsh"}
    recall = {m: s["recall@100"] for m, s in result["scores"].items()}
    assert result["kept"] == max(recall, key=recall.get) != "tbh"
    assert runs.load_config(run)["method"] == result["kept"]
    assert not (run / CHECKPOINT_FILE).exists()
    assert f"kept {result['kept'].upper()}" in result["verdict"]
    # the kept encoder is the one that was scored
    again = runs.load_run(run).encode(np.load(feats))
    assert again.shape == (200, 1)


def test_runs_written_with_bits_in_the_model_config_still_load(feats, tmp_path):
    run = quick(feats, tmp_path / "run")
    config = runs.load_config(run)
    config["model"] |= {"bits": 8, "feature_dim": 16}  # the layout before bits was stored once
    (run / runs.CONFIG_FILE).write_text(json.dumps(config))
    assert runs.load_run(run).encode(np.load(feats)).shape == (200, 1)
