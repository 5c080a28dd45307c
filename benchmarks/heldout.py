"""Held-out accuracy on real tasks: fixed test splits, a TF-IDF peer on the same rows, and the pipeline command.

    .venv/bin/python benchmarks/heldout.py splits --out runs/heldout      # train/test files of each task
    .venv/bin/python benchmarks/heldout.py tfidf  --out runs/heldout      # the TF-IDF + logistic regression peer
    .venv/bin/python benchmarks/heldout.py score RUN_DIR                  # a pipeline run's test numbers

Each task's test rows are fixed in `benchmarks/splits/<task>.json` (row numbers of the public source file, with
its sha256): nothing is ever tuned on them. The pipeline is then run as

    nbtoolkit pipeline --train runs/heldout/stackoverflow/train.parquet \\
        --eval runs/heldout/stackoverflow/test.parquet --profile standard
    nbtoolkit pipeline --train runs/heldout/trec/train.csv --eval runs/heldout/trec/test.csv \\
        --question text --answer label --profile standard           # likewise sst2

so every choice it makes (checkpoint, whether RFT's result is kept) uses validation rows it carves from the
training file. The peer calibrates its regularisation on a validation split carved from the same training file
and is scored once on the test rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SPLITS = Path(__file__).resolve().parent / "splits"


def _read_so(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path).reset_index(drop=True)
    return pd.DataFrame({"text": frame["text"], "label": frame["rating"]})


def _read_trec(path: Path) -> pd.DataFrame:
    lines = path.read_bytes().decode("latin-1").splitlines()
    labels, texts = zip(*(line.split(" ", 1) for line in lines if line.strip()))
    return pd.DataFrame({"text": texts, "label": [label.split(":")[0] for label in labels]})


def _read_sst2(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", quoting=3, dtype={"sentence": str})
    return pd.DataFrame({"text": frame["sentence"], "label": frame["label"].map({0: "negative", 1: "positive"})})


# source file, reader, test rows per label, training rows kept (None: every other row)
TASKS = {
    "stackoverflow": ("stackoverflow-quality/so_quality_6750.parquet", _read_so, 200, None),
    "trec": ("trec/train_5500.label", _read_trec, None, None),
    "sst2": ("sst2/train.tsv", _read_sst2, 500, 6000),
}
TREC_TEST_ROWS = 500  # stratified by the six coarse labels
SPLIT_SEED = 20261205


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stratified(labels: pd.Series, per_label: int | None, total: int | None, rng: np.random.Generator) -> list[int]:
    if per_label is not None:
        return sorted(int(i) for label in sorted(labels.unique())
                      for i in rng.choice(np.flatnonzero(labels == label), per_label, replace=False))
    shares = labels.value_counts(normalize=True)
    counts = {label: max(1, round(share * total)) for label, share in shares.items()}
    return sorted(int(i) for label in sorted(counts)
                  for i in rng.choice(np.flatnonzero(labels == label), counts[label], replace=False))


def fixed_split(task: str) -> dict:
    """The task's fixed test rows (made once, then read from benchmarks/splits/<task>.json)."""
    relative, reader, per_label, train_rows = TASKS[task]
    source = SHARED / relative
    record_path = SPLITS / f"{task}.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if source.exists() and _sha256(source) != record["sha256"]:
            raise SystemExit(f"{source} is not the file the split was made from (sha256 differs)")
        return record
    frame = reader(source)
    rng = np.random.default_rng(SPLIT_SEED)
    test = _stratified(frame["label"], per_label, None if per_label else TREC_TEST_ROWS, rng)
    rest = np.setdiff1d(np.arange(len(frame)), test)
    train = sorted(int(i) for i in (rng.choice(rest, train_rows, replace=False) if train_rows else rest))
    record = {"task": task, "source": relative, "sha256": _sha256(source), "seed": SPLIT_SEED,
              "test_rows": test, "train_rows": train}
    SPLITS.mkdir(exist_ok=True)
    record_path.write_text(json.dumps(record))
    return record


def task_frames(task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) rows of a task, from the shared data and the fixed split."""
    relative, reader, _, _ = TASKS[task]
    source = SHARED / relative
    if not source.exists():
        raise SystemExit(f"needs {source}: the shared data is not on this machine")
    record = fixed_split(task)
    frame = reader(source)
    return frame.iloc[record["train_rows"]], frame.iloc[record["test_rows"]]


def write_splits(out: Path) -> None:
    for task in TASKS:
        train, test = task_frames(task)
        folder = out / task
        folder.mkdir(parents=True, exist_ok=True)
        if task == "stackoverflow":  # the source's own columns, so prepare recognises the task and its prompt
            for name, part in (("train", train), ("test", test)):
                part.rename(columns={"label": "rating"}).to_parquet(folder / f"{name}.parquet", index=False)
        else:
            train.to_csv(folder / "train.csv", index=False)
            test.to_csv(folder / "test.csv", index=False)
        print(f"{task}: train {len(train):,} rows, test {len(test):,} rows "
              f"({', '.join(f'{k} {v}' for k, v in test['label'].value_counts().sort_index().items())}) -> {folder}")


def tfidf_peer(task: str, seed: int = 0) -> dict:
    """TF-IDF (word 1-2 grams) + logistic regression: C chosen on a validation split of the training rows,
    refit on all of them, scored once on the test rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline

    train, test = task_frames(task)

    def model(c: float):
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                             LogisticRegression(C=c, max_iter=2000))

    fit, validation = train_test_split(train, test_size=0.1, stratify=train["label"], random_state=seed)
    scores = {c: float((model(c).fit(fit["text"], fit["label"]).predict(validation["text"])
                        == validation["label"]).mean()) for c in (0.3, 1.0, 3.0, 10.0, 30.0)}
    best = max(scores, key=lambda c: (scores[c], -c))
    correct = model(best).fit(train["text"], train["label"]).predict(test["text"]) == test["label"].to_numpy()
    accuracy = float(correct.mean())
    return {"task": task, "train_rows": len(train), "test_rows": len(test), "C": best, "validation": scores,
            "test_accuracy": accuracy, "test_stderr": float(correct.std(ddof=1) / math.sqrt(len(correct)))}


def score_run(run_dir: Path) -> None:
    """Test exact match of each stage of a pipeline run, with the paired change between stages."""
    stages = json.loads((run_dir / "stages.json").read_text())
    for stage, metrics in stages["stages"].items():
        delta = stages.get("deltas", {}).get(stage, {})
        paired = (f"  paired change {delta['exact_match_paired']:+.3f} ± {delta['exact_match_paired_stderr']:.3f}"
                  if "exact_match_paired" in delta else "")
        print(f"{stage:9s} exact match {metrics['exact_match']:.3f} ± {metrics.get('exact_match_stderr', 0):.3f}"
              f" on {metrics.get('rows')} ({metrics.get('split')}){paired}")
    print(f"choices made on validation: {json.dumps(stages.get('selection', {}))}")
    print(f"final stage: {stages.get('final_stage')}; wall time {stages.get('seconds', 0) / 60:.1f} min")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["splits", "tfidf", "score"])
    parser.add_argument("run_dir", nargs="?", help="pipeline output directory (score)")
    parser.add_argument("--out", default="runs/heldout", help="where the train/test files go (splits)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of " + ",".join(TASKS))
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if args.command == "splits":
        write_splits(Path(args.out))
    elif args.command == "tfidf":
        for task in tasks:
            result = tfidf_peer(task)
            print(f"{task}: TF-IDF + logistic regression {result['test_accuracy']:.3f} ± {result['test_stderr']:.3f} "
                  f"on {result['test_rows']} test rows (trained on {result['train_rows']:,}; C={result['C']} chosen "
                  f"on validation {json.dumps(result['validation'])})")
    else:
        if not args.run_dir:
            parser.error("score needs RUN_DIR")
        score_run(Path(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
