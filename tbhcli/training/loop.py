"""TBH's training loop: two Adam optimisers, checkpoints, validation, early stopping, progress bar.

One step is one forward pass of a full batch and one update of each optimiser (tbh.losses). The
checkpoint holds the model, both optimisers, both RNG streams, the position in the epoch's data
order and the early-stopping state with the best weights, so resuming is bit-exact. The first
non-finite loss ends training with one line and no run. `tbhcli.training.fit.train` sets this up.
"""

import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tbhcli import terminal
from tbhcli.atomic import atomic_output, write_text_atomic
from tbhcli.errors import TbhError
from tbhcli.hashing import runs
from tbhcli.hashing.codes import pack_bits
from tbhcli.hashing.runs import model_config
from tbhcli.hashing.tbh import TBHConfig, TwinBottleneck, losses
from tbhcli.imaging.featureset import FeatureSet, check_label_kinds, load_features
from tbhcli.training.stopping import EarlyStopping, copy_state
from tbhcli.training.validation import Validator

CHECKPOINT_FILE = "checkpoint.pt"
EVAL_METRIC = "map@1000"


# ---- evaluation during training ---------------------------------------------------------------


class HeldOut:
    """mAP@1000 of the current encoder: the training set is the database, `queries` the queries."""

    def __init__(self, train: FeatureSet, queries: Path, device: torch.device):
        if train.labels is None:
            raise TbhError(f"--eval-every needs labels for {train.path} (NAME.labels.npy).")
        q = load_features(queries, require_labels=True)
        if q.dim != train.dim:
            raise TbhError(
                f"--eval-queries have D = {q.dim} but the features have D = {train.dim}."
            )
        check_label_kinds(train.labels, q.labels)
        self.db = torch.from_numpy(train.features).to(device)
        self.db_labels = train.labels
        self.q = torch.from_numpy(q.features).to(device)
        self.q_labels = q.labels

    @torch.no_grad()
    def __call__(self, encoder: torch.nn.Module) -> float:
        from tbhcli.evaluation.metrics import evaluate_codes

        db = pack_bits((encoder(self.db) > 0).cpu().numpy())
        q = pack_bits((encoder(self.q) > 0).cpu().numpy())
        return evaluate_codes(db, self.db_labels, q, self.q_labels, (EVAL_METRIC,))[EVAL_METRIC]


# ---- TBH training loop ------------------------------------------------------------------------


class Trainer:
    """One TBH model, its two Adam optimisers, its RNG streams and its position in the data."""

    def __init__(self, cfg: TBHConfig, x: torch.Tensor, batch_size: int, lr: float, seed: int):
        torch.manual_seed(seed)  # the initial weights
        self.model = TwinBottleneck(cfg).to(x.device)
        self.actor = self.model.actor_parameters()
        self.critic = self.model.critic_parameters()
        self.actor_opt = torch.optim.Adam(self.actor, lr=lr, betas=(0.9, 0.999))
        self.critic_opt = torch.optim.Adam(self.critic, lr=lr, betas=(0.9, 0.999))
        self.data_gen = torch.Generator().manual_seed(seed)  # shuffles (CPU)
        self.noise_gen = torch.Generator(x.device).manual_seed(seed + 1)  # priors, eps
        self.x, self.batch_size, self.step = x, batch_size, 0
        self.order = torch.empty(0, dtype=torch.long)
        self.cursor = 0

    def next_batch(self) -> torch.Tensor:
        """Full batches of a fresh permutation each epoch; the tail (< batch size) is dropped."""
        if self.cursor + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.x), generator=self.data_gen)
            self.cursor = 0
        idx = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return self.x[idx.to(self.x.device)]

    def train_step(self) -> dict[str, torch.Tensor]:
        """One actor and one critic update from the same forward pass (as the reference)."""
        terms = losses(self.model, self.next_batch(), self.noise_gen)
        critic_grads = torch.autograd.grad(terms["critic"], self.critic, retain_graph=True)
        actor_grads = torch.autograd.grad(terms["actor"], self.actor)
        for params, grads in ((self.critic, critic_grads), (self.actor, actor_grads)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        self.actor_opt.step()
        self.critic_opt.step()
        self.step += 1
        return {k: v.detach() for k, v in terms.items()}

    def state(self, config: dict) -> dict:
        return {
            "config": json.dumps(config),
            "step": self.step,
            "model": self.model.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "order": self.order,
            "cursor": self.cursor,
        }

    def save(self, path: Path, config: dict, extra: dict | None = None) -> None:
        with atomic_output(path) as tmp:
            torch.save(self.state(config) | (extra or {}), tmp)

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.data_gen.set_state(state["data_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        self.order, self.cursor, self.step = state["order"], state["cursor"], state["step"]


def load_checkpoint(path: Path, config: dict) -> dict:
    """The checkpoint, after checking it was made with the same settings (`steps` may differ)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        old = json.loads(state["config"])
    except Exception as exc:  # torch and json raise several types for a bad or foreign file
        raise TbhError(
            f"cannot read the checkpoint {path} ({exc}); start over with --force."
        ) from None
    ignore = {"steps", "stop", "eval_every", "eval_queries", "device", "tbh_version"}
    changed = sorted(
        k for k in set(old) | set(config) if k not in ignore and old.get(k) != config.get(k)
    )
    if changed:
        raise TbhError(
            f"cannot resume {path.parent}: settings differ from the checkpoint "
            f"({', '.join(changed)}); rerun with the original settings or start over with --force."
        )
    if state["step"] > config["steps"]:
        raise TbhError(
            f"{path.parent} is already at step {state['step']} > --steps {config['steps']}."
        )
    return state


def _progress():
    """The training progress bar, on stderr (stdout stays free for `--json`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} step/s"),
        TextColumn("{task.fields[eta]}"),
        TextColumn("{task.fields[losses]}"),
        console=terminal.make_console(stderr=True),
        transient=False,
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
        if minutes >= 60
        else f"{minutes}:{secs:02d}"
    )


def eta_text(step: int, rate: float, steps: int, earliest: int | None = None) -> str:
    """Time left at `rate` steps/s: to `steps`, or for a run that stops at its plateau, from its
    `earliest` possible stop (no further gain) to `steps` (gains until the cap)."""
    if rate <= 0 or step >= steps:
        return ""
    most = _clock((steps - step) / rate)
    if earliest is None:
        return f"{most} left"
    least = _clock(max(earliest - step, 0) / rate)  # if the score does not improve again
    return f"{least}-{most} left"


class DeferredInterrupt:
    """Ctrl-C during a step takes effect after it, so a saved checkpoint is always a whole step."""

    def __enter__(self) -> "DeferredInterrupt":
        self.requested = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum, frame) -> None:
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class Diverged(TbhError):
    """The loss stopped being a number: no run is written."""


@dataclass
class LoopResult:
    """How a TBH training ended."""

    step: int  # the last step trained
    best_step: int | None  # the step whose weights were kept (None: the last step's)
    reason: str  # "steps" (ran to --steps) or "plateau" (validation stopped improving)
    seconds: float
    steps_per_s: float
    warnings: list[str] = field(default_factory=list)
    # torch's CPU threads: floats are summed in another order with another count, so the same
    # seed can stop at another step on a machine with another number of cores (docs/usage.md)
    threads: int | None = None


class DivergenceGuard:
    """Stop at the first non-finite loss; warn once when the reconstruction grows 100x."""

    GROWTH = 100.0

    def __init__(self, lr: float):
        self.lr, self.first_rec, self.warnings = lr, None, []

    def check(self, step: int, terms: dict[str, torch.Tensor]) -> str | None:
        """Raise Diverged on NaN/inf; return a warning line the first time rec explodes."""
        values = {k: float(terms[k]) for k in ("rec", "actor", "critic")}
        for name, value in values.items():
            if not math.isfinite(value):
                what = "NaN" if math.isnan(value) else "inf"
                scale = " or rescale the features" if step == 1 else ""
                raise Diverged(
                    f"loss became {what} at step {step} ({name}): lower --lr (it is {self.lr:g})"
                    f"{scale}; no run was written."
                )
        rec = values["rec"]
        if self.first_rec is None:
            self.first_rec = rec
        elif not self.warnings and rec > self.GROWTH * max(self.first_rec, 1e-12):
            self.warnings.append(
                f"reconstruction loss grew {rec / max(self.first_rec, 1e-12):.0f}x since the first "
                f"step ({self.first_rec:.3g} -> {rec:.3g} at step {step}): training is diverging; "
                "lower --lr."
            )
            return self.warnings[-1]
        return None


def _check_weights(model: torch.nn.Module, step: int, lr: float) -> None:
    """A checkpoint is never written with NaN or inf weights (a resume would diverge at once)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise Diverged(f"weights became NaN or inf at step {step}: lower --lr (it is {lr:g}).")


def fit_tbh(
    out: Path,
    x: torch.Tensor,
    config: dict,
    resume: bool,
    validator: Validator | None,
    held_out: HeldOut | None,
    log_every: int,
    checkpoint_every: int,
    quiet: bool,
) -> LoopResult:
    """Train TBH on x [N, D] to `config["steps"]` (or its validation plateau) and save the encoder.

    Every `val_every` steps the encoder is scored by `validator` (logged as {"step", "val"}); with
    `config["stop"]` the run stops once the score has not improved for `patience` steps and keeps
    the best weights. A non-finite loss raises Diverged before anything is saved.
    """
    trainer = Trainer(model_config(config), x, config["batch_size"], config["lr"], config["seed"])
    stop = config.get("stop")
    stopping = EarlyStopping(stop["patience"], stop["min_steps"]) if stop and validator else None
    best: dict[str, torch.Tensor] = {}
    ckpt, log_path = out / CHECKPOINT_FILE, out / runs.LOG_FILE
    if resume:
        state = load_checkpoint(ckpt, config)
        trainer.load(state)
        if stopping is not None and state.get("stopping"):
            stopping = EarlyStopping(**state["stopping"])
            best = state.get("best") or {}
        _truncate_log(log_path, trainer.step)
    else:
        write_text_atomic(log_path, "")

    def save_checkpoint() -> None:
        _check_weights(trainer.model, trainer.step, config["lr"])
        extra = {"stopping": stopping.state(), "best": best} if stopping is not None else {}
        trainer.save(ckpt, config, extra)

    steps, eval_every, val_every = config["steps"], config["eval_every"], config["val_every"]
    guard, reason = DivergenceGuard(config["lr"]), "steps"
    log = open(log_path, "a", buffering=1)  # noqa: SIM115  (line-buffered: `tail -f` works)
    start_step, t0 = trainer.step, time.perf_counter()
    last_eval = last_val = shown = ""
    title = f"TBH {config['bits']} bits" + (" (stops at its plateau)" if stopping else "")
    with _progress() as bar, DeferredInterrupt() as interrupt:
        task = bar.add_task(title, total=steps, completed=start_step, rate=0.0, eta="", losses="")
        bar.live.transient = quiet
        try:
            while trainer.step < steps:
                terms = trainer.train_step()
                step = trainer.step
                warning = guard.check(step, terms)
                if warning:
                    log.write(json.dumps({"step": step, "warning": warning}) + "\n")
                    bar.console.print(f"[yellow]warning:[/] {warning}", highlight=False)
                if step % log_every == 0 or step == steps:
                    row = {"step": step, **{k: float(v) for k, v in terms.items()}}
                    row["time"] = round(time.perf_counter() - t0, 3)
                    log.write(json.dumps(row) + "\n")
                    rate = (step - start_step) / max(time.perf_counter() - t0, 1e-9)
                    shown = (
                        f"rec {row['rec']:.4g} adv_b {row['adv_b']:.3f} adv_z {row['adv_z']:.3f}"
                    )
                    earliest = stopping.earliest_stop(step) if stopping is not None else None
                    eta = eta_text(step, rate, steps, earliest)
                    losses = shown + last_val + last_eval
                    bar.update(task, completed=step, rate=rate, eta=eta, losses=losses)
                if validator is not None and step % val_every == 0:
                    scores = validator(trainer.model.encoder)
                    log.write(json.dumps({"step": step, "val": scores}) + "\n")
                    last_val = f" val {validator.metric} {scores[validator.metric]:.4f}"
                    if stopping is not None:
                        if stopping.update(step, scores[validator.metric]):
                            best = copy_state(trainer.model.encoder)
                        if stopping.should_stop(step):
                            reason = "plateau"
                    bar.update(task, losses=shown + last_val + last_eval)
                if held_out is not None and eval_every and step % eval_every == 0:
                    score = held_out(trainer.model.encoder)
                    log.write(json.dumps({"step": step, EVAL_METRIC: score}) + "\n")
                    last_eval = f" {EVAL_METRIC} {score:.4f}"
                    bar.update(task, losses=shown + last_val + last_eval)
                if checkpoint_every and step % checkpoint_every == 0:
                    save_checkpoint()
                interrupt.check()
                if reason == "plateau":
                    break
        except KeyboardInterrupt:
            log.close()
            save_checkpoint()
            bar.console.print(
                f"[yellow]checkpoint saved at step {trainer.step} in {terminal.shown(out)}; "
                "add --resume to the same command to continue."
            )
            raise
        except Diverged:
            log.close()
            raise
    log.close()
    seconds = time.perf_counter() - t0
    save_checkpoint()
    encoder = trainer.model.encoder
    if best:
        encoder.load_state_dict(best)
    runs.save_run(out, config, encoder.cpu())
    return LoopResult(
        step=trainer.step,
        best_step=stopping.best_step if best else None,
        reason=reason,
        seconds=round(seconds, 3),
        steps_per_s=round((trainer.step - start_step) / max(seconds, 1e-9), 2),
        warnings=guard.warnings,
        threads=torch.get_num_threads(),
    )


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint, so a resumed log reads like a straight one.

    A row that does not parse is dropped too: a kill can cut the last line short. So is the
    summary row of a finished run that is being extended: the extended run writes its own.
    """
    if not path.is_file():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            if row["step"] <= step and "summary" not in row:
                rows.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text_atomic(path, "".join(r + "\n" for r in rows))
