"""Which codes are better on this data: TBH and the classical hashers on the same held-out split.

The paper's margin over ITQ was measured on one kind of feature; on others ITQ can win
(docs/results.md). ITQ, PCAH and LSH fit in seconds, so `tbh train` fits them on the same training
split, scores everything on the same held-out items, and says which codes are better.
"""

from dataclasses import dataclass, field

from torch import nn

from tbhcli.errors import TbhError
from tbhcli.hashing.baselines import fit_baseline
from tbhcli.imaging.featureset import FeatureSet
from tbhcli.training.validation import Split, Validator

NAMES = {"tbh": "TBH", "itq": "ITQ", "pcah": "PCAH", "lsh": "LSH"}
SAME = 0.005  # recall differences below this are run-to-run noise: "about as good"


@dataclass
class Comparison:
    """Held-out scores (and the fitted encoders) of each method, in the order they were added."""

    metric: str | None = None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    encoders: dict[str, nn.Module] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, method: str, scores: dict[str, float] | None, encoder: nn.Module) -> None:
        self.encoders[method] = encoder
        if scores is not None:
            self.metric = self.metric or next(iter(scores))
            self.scores[method] = scores

    def best(self) -> str:
        """The method with the highest held-out score (the first added wins a tie)."""
        if not self.scores:
            raise TbhError("no held-out scores to compare; use --val-fraction > 0.")
        order = list(self.scores)
        return max(order, key=lambda m: (self.scores[m][self.metric], -order.index(m)))


def compare_baselines(
    data: FeatureSet,
    split: Split,
    bits: int,
    seed: int,
    methods: tuple[str, ...],
    validator: Validator | None,
    comparison: Comparison | None = None,
) -> Comparison:
    """Fit each baseline on the training rows; score it on the held-out rows when there are any."""
    comparison = comparison or Comparison()
    train_x = data.features[split.train]
    for method in methods:
        if method in ("pcah", "itq") and bits > min(train_x.shape):
            comparison.skipped[method] = f"needs bits <= min(N, D) = {min(train_x.shape)}"
            continue
        encoder = fit_baseline(method, train_x, bits, seed).float()
        comparison.add(method, validator(encoder) if validator else None, encoder)
    return comparison


def verdict(scores: dict[str, dict[str, float]], metric: str, kept: str, trained: str) -> str:
    """One line a user can act on: which codes are better on the held-out items, by how much."""
    where = f"{metric.replace('recall', 'neighbour recall')} on held-out features"
    if len(scores) < 2:
        return f"{NAMES[kept]} {scores[kept][metric]:.3f} {where}."
    ranked = sorted(scores, key=lambda m: -scores[m][metric])
    if trained == "auto":
        runner_up = ranked[1] if ranked[0] == kept else ranked[0]
        gain = scores[kept][metric] - scores[runner_up][metric]
        return (
            f"kept {NAMES[kept]}: {scores[kept][metric]:.3f} {where}, {gain:+.3f} over the next "
            f"best ({NAMES[runner_up]} {scores[runner_up][metric]:.3f})."
        )
    other = next(m for m in ranked if m != kept)
    mine, theirs = scores[kept][metric], scores[other][metric]
    pair = (other, kept) if theirs > mine else (kept, other)
    line = " vs ".join(f"{NAMES[m]} {scores[m][metric]:.3f}" for m in pair)
    if abs(mine - theirs) < SAME:
        return f"{line} {where}: about equally good on this data."
    if theirs > mine:
        return (
            f"{line} {where}: {NAMES[other]} codes are better on this data "
            f"(`--method {other}` or `--method auto` keeps them)."
        )
    return f"{line} {where}: {NAMES[kept]} codes are better on this data."


def summary_row(comparison: Comparison, kept: str, trained: str, step: int, result) -> dict:
    """The last row of a run's log: scores of every method fitted, the kept one, how TBH ended."""
    summary: dict = {
        "method": trained,
        "kept": kept,
        "metric": comparison.metric,
        "scores": comparison.scores,
        "skipped": comparison.skipped,
        "verdict": None,
    }
    if comparison.metric is not None:
        summary["verdict"] = verdict(comparison.scores, comparison.metric, kept, trained)
    if result is not None:
        summary |= {
            "steps": result.step,
            "best_step": result.best_step,
            "stopped": result.reason,
            "seconds": result.seconds,
            "steps_per_s": result.steps_per_s,
            "warnings": result.warnings,
            "threads": result.threads,
        }
    return {"step": step, "summary": summary}
