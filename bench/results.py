"""Reproduce the results table of docs/results.md: mAP@1000 of TBH, its three ablations and the
LSH / PCAH / ITQ baselines at 16, 32 and 64 bits, mean ± std over 3 seeds.

    .venv/bin/python bench/results.py --db demo/features.npy --queries demo/queries.npy \\
        --runs runs/results --steps 500 --preset fast [--gamma G] [--shard 0/2] \\
        [--report docs/results.md]
    .venv/bin/python bench/results.py --db digits/db.npy --queries digits/queries.npy \\
        --runs runs/digits --rows "TBH default" "TBH faithful" ITQ PCAH LSH --faithful-steps 1000

The rows "TBH default" (`tbh train DB --bits B`, stops at its plateau) and "TBH faithful"
(`--preset faithful --steps N`) keep their own schedule; the other TBH rows take --steps,
--preset and --gamma.

Every cell is `tbh train` (through the library verb of the same name) followed by mAP@1000 of the
queries against the training set as the database (`tbh evaluate --run RUN --database DB
--query-features Q`). A finished cell leaves `score.json` in its run directory and is skipped next
time, so the table can be built in pieces (`--shard i/n` in parallel processes) and `--report` alone
rewrites the table from the scores on disk.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tbhcli.evaluation.metrics import evaluate_codes
from tbhcli.hashing import runs
from tbhcli.imaging.featureset import load_features
from tbhcli.training.fit import summary, train
from tbhcli.training.loop import CHECKPOINT_FILE

BITS = (16, 32, 64)
SEEDS = (0, 1, 2)
METRIC = "map@1000"
# row name -> (train() keyword arguments, CLI flags)
ROWS = {
    "TBH default": ({}, ""),  # `tbh train DB --bits B`: fast preset, stops at its plateau
    "TBH faithful": ({"preset": "faithful"}, " --preset faithful"),  # --steps from --faithful-steps
    "TBH": ({}, ""),
    "TBH, single bottleneck": ({"single_bottleneck": True}, " --single-bottleneck"),
    "TBH, fixed graph": ({"fixed_graph": True}, " --fixed-graph"),
    "TBH, deterministic neuron": ({"stochastic_neuron": False}, " --deterministic-neuron"),
    "ITQ": ({"method": "itq"}, " --method itq"),
    "PCAH": ({"method": "pcah"}, " --method pcah"),
    "LSH": ({"method": "lsh"}, " --method lsh"),
}
# paper Table 1 / Sec. 4.4 ablations, CIFAR-10 mAP@1000 (fc7 features; for reference only)
PAPER = {
    "TBH default": (0.532, 0.573, 0.578),
    "TBH faithful": (0.532, 0.573, 0.578),
    "TBH": (0.532, 0.573, 0.578),
    "TBH, single bottleneck": (0.435, 0.437, 0.433),
    "TBH, fixed graph": (0.442, 0.464, 0.459),
    "TBH, deterministic neuron": (0.408, 0.412, 0.463),
    "ITQ": (0.305, 0.325, 0.349),
    "PCAH": None,
    "LSH": (0.106, 0.102, 0.105),
}


def slug(row: str) -> str:
    return row.lower().replace(", ", "-").replace(" ", "-")


def is_tbh(row: str) -> bool:
    return "method" not in ROWS[row][0]


def own_schedule(row: str) -> bool:
    """Rows that keep their own schedule instead of --steps/--preset/--gamma."""
    return row in ("TBH default", "TBH faithful")


def has_graph(row: str) -> bool:
    """TBH rows whose model builds a per-batch graph, the rows --gamma applies to."""
    return is_tbh(row) and "single_bottleneck" not in ROWS[row][0]


def command(row: str, args: argparse.Namespace, bits: str = "{bits}", seed: str = "{seed}") -> str:
    """The `tbh train` command of one cell."""
    schedule = f" --steps {args.steps} --preset {args.preset}" if is_tbh(row) else ""
    if args.gamma is not None and has_graph(row):
        schedule += f" --gamma {args.gamma:g}"
    if own_schedule(row):
        schedule = f" --steps {args.faithful_steps}" if row == "TBH faithful" else ""
    if args.val_fraction != 0.1:
        schedule += f" --val-fraction {args.val_fraction:g}"
    out = args.runs / f"{slug(row)}-{bits}-s{seed}"
    return f"tbh train {args.db} --bits {bits} --seed {seed}{ROWS[row][1]}{schedule} --out {out}"


def run_cell(row: str, bits: int, seed: int, args: argparse.Namespace, db, queries) -> None:
    """Train (or extend, with --resume, to more --steps) one cell and score it."""
    out = args.runs / f"{slug(row)}-{bits}-s{seed}"
    done = json.loads((out / "score.json").read_text()) if (out / "score.json").is_file() else {}
    steps = args.steps if is_tbh(row) else None
    if own_schedule(row):
        steps = args.faithful_steps if row == "TBH faithful" else None
    if done and done.get("steps") == steps:
        return
    kwargs = dict(ROWS[row][0])
    if own_schedule(row):
        kwargs |= {"steps": steps}
    elif is_tbh(row):
        # resuming is bit-exact, so extending a cell equals training it straight to --steps
        resume = bool(done) and (out / CHECKPOINT_FILE).is_file() and done["steps"] < steps
        kwargs |= {"steps": steps, "preset": args.preset, "resume": resume}
    if args.gamma is not None and has_graph(row) and not own_schedule(row):
        kwargs["gamma"] = args.gamma
    t0 = time.perf_counter()
    kwargs["val_fraction"] = args.val_fraction
    train(
        args.db, bits=bits, seed=seed, out=out, force=not kwargs.get("resume"), quiet=True, **kwargs
    )
    run = runs.load_run(out)
    db_codes, q_codes = run.encode(db.features), run.encode(queries.features)
    score = evaluate_codes(db_codes, db.labels, q_codes, queries.labels, (METRIC,))[METRIC]
    seconds = round(time.perf_counter() - t0, 1)
    result = {METRIC: score, "steps": steps, "seconds": seconds}
    if is_tbh(row):  # how many steps it trained, which step it kept (early stopping)
        ended = summary(out)
        result |= {"trained": ended["steps"], "kept_step": ended["best_step"] or ended["steps"]}
    (out / "score.json").write_text(json.dumps(result) + "\n")
    print(f"{row:28s} {bits:2d} bits seed {seed}: {METRIC} {score:.4f} ({seconds} s)", flush=True)


def cell(row: str, bits: int, args: argparse.Namespace) -> str:
    scores = []
    for seed in SEEDS:
        path = args.runs / f"{slug(row)}-{bits}-s{seed}" / "score.json"
        if path.is_file():
            scores.append(json.loads(path.read_text())[METRIC])
    if not scores:
        return "—"
    text = f"{np.mean(scores):.3f} ± {np.std(scores, ddof=1) if len(scores) > 1 else 0:.3f}"
    return text if len(scores) == len(SEEDS) else f"{text} (n={len(scores)})"


def table(args: argparse.Namespace) -> str:
    lines = [
        "| method | 16 bits | 32 bits | 64 bits | paper, CIFAR-10 16 / 32 / 64 |",
        "|---|---|---|---|---|",
    ]
    for row in args.rows:
        paper = " / ".join(f"{v:.3f}" for v in PAPER[row]) if PAPER[row] else "—"
        cells = " | ".join(cell(row, bits, args) for bits in BITS)
        lines.append(f"| {row} | {cells} | {paper} |")
    lines += ["", "Commands (bits ∈ {16, 32, 64}, seed ∈ {0, 1, 2}); each run is then scored with",
              f"`tbh evaluate --run RUN --database {args.db} --query-features {args.queries}"
              f" --metric {METRIC}`:", ""]  # fmt: skip
    lines += [f"- {row}: `{command(row, args)}`" for row in args.rows]
    return "\n".join(lines) + "\n"


def write_report(path: Path, text: str, section: str) -> None:
    """Replace what lies between the section's markers in `path` (the rest is prose)."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    head, rest = path.read_text().split(begin, 1)
    path.write_text(f"{head}{begin}\n{text}{end}{rest.split(end, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/results"))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--gamma", type=float, help="graph exponent of the TBH rows (tbh --gamma)")
    parser.add_argument(
        "--faithful-steps", type=int, default=2000, help="--steps of the TBH faithful row"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="tbh train --val-fraction (0: the tables made before the held-out split)",
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS), help="seeds to run")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th cell from the i-th")
    parser.add_argument("--rows", nargs="*", default=list(ROWS)[2:], help="subset of row names")
    parser.add_argument(
        "--report", type=Path, help="rewrite the table between the markers in this file and exit"
    )
    parser.add_argument("--section", default="results", help="marker name used by --report")
    args = parser.parse_args()
    if args.report:
        write_report(args.report, table(args), args.section)
        return
    db = load_features(args.db, require_labels=True)
    queries = load_features(args.queries, require_labels=True)
    i, n = map(int, args.shard.split("/"))
    # TBH cells first, interleaved over bits and seeds, so shards get equal work
    cells = [(r, b, s) for s in args.seeds for b in BITS for r in args.rows]
    cells.sort(key=lambda c: not is_tbh(c[0]))
    for row, bits, seed in cells[i::n]:
        run_cell(row, bits, seed, args, db, queries)


if __name__ == "__main__":
    main()
