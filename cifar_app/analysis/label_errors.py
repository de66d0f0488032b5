"""Which labels are wrong: detectors of label errors, scored per image, and how well a detector finds known errors.
numpy, pandas and cleanlab only (no torch): a page reads the saved results without torch's import.

Three detectors, each a score per image (higher: the label is more likely wrong) and a flagged list:
  dynamics   the training-dynamics score of the run that trained on the labels (analysis/dynamics.py's mislabel
             score: the mean probability of the runner-up class minus the label's, over the epochs); flagged at
             MISLABEL_MARGIN and above, as the Dynamics page's list;
  cleanlab   confident learning on out-of-sample probabilities from K-fold cross-validation (engine/folds.py):
             cleanlab.filter.find_label_issues flags, cleanlab.rank's label quality ranks (self-confidence or
             normalized margin, 1 minus the quality as the score);
  combined   both evidences at once, flagged where both detectors flag;
             where cleanlab flags and the training dynamics agree (dynamics score above 0: the label lost).
The suggestion for a flagged image is the class the out-of-sample probabilities favour other than its label.
Results are saved with the run they were found for (`label-errors/` in its folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cifar_app.analysis.dynamics import MISLABEL_MARGIN
from cifar_app.atomic import atomic_write_json, atomic_write_text
from cifar_app.data.formats import CLASSES
from cifar_app.data.label_files import EXCLUDED

RESULTS_DIR = "label-errors"
DETECTORS = ("dynamics", "cleanlab", "combined")
RANKING = "self_confidence"  # cleanlab.rank's method; normalized_margin is the other (docs/labels.md compares them)
AT = (100, 500, 1000)


def suggestions(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The likeliest class other than the label, by `probs` (N, C)."""
    others = np.where(np.arange(probs.shape[1])[None, :] == labels[:, None], -np.inf, probs)
    return others.argmax(1)


def cleanlab_scores(labels: np.ndarray, probs: np.ndarray, method: str = RANKING) -> tuple[np.ndarray, np.ndarray]:
    """(score: 1 - cleanlab's label quality, flagged: find_label_issues) for labels 0..C-1 and out-of-sample probs."""
    # seconds to import: only when a search runs
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.clip(probs, 1e-6, None)
    probs = probs / probs.sum(1, keepdims=True)
    quality = get_label_quality_scores(labels, probs, method=method)
    flagged = find_label_issues(labels, probs, n_jobs=1)
    return 1 - quality, flagged


def percentile(score: np.ndarray) -> np.ndarray:
    """Each score's rank among them in (0, 1]; ties share their mean rank."""
    return pd.Series(score).rank(method="average").to_numpy() / max(len(score), 1)


def detect(index: np.ndarray, labels: np.ndarray, probs: np.ndarray, dynamics_score: np.ndarray,
           confidence: np.ndarray | None = None, looks_like: np.ndarray | None = None,
           classes: tuple[str, ...] = CLASSES, method: str = RANKING) -> pd.DataFrame:
    """One row per image (its `index` in the split), the likeliest label error first: index, label, suggested,
    action (relabel to the suggestion, or exclude), p_label (the out-of-sample probability of the label),
    p_suggested, and for each detector its score and flag. `confidence` is the label's mean probability over the
    training epochs (the dynamics' own), `looks_like` the class the training dynamics favour other than the label."""
    cl_score, cl_flag = cleanlab_scores(labels, probs, method)
    dyn = np.nan_to_num(dynamics_score, nan=-1.0)
    rows = np.arange(len(labels))
    p_label = probs[rows, labels]
    if confidence is None:
        combined = (percentile(cl_score) + percentile(dyn)) / 2
    else:  # the label's probability out of sample and in training, averaged: docs/labels.md compares the ways
        combined = 1 - (p_label + np.nan_to_num(confidence, nan=1.0)) / 2
    suggested = suggestions(labels, probs)
    # relabel where the held-out model and the training dynamics name the same class; exclude where they do not
    agree = suggested == looks_like if looks_like is not None else np.ones(len(labels), dtype=bool)
    names = np.array(classes)
    table = pd.DataFrame({
        "index": index, "label": names[labels], "suggested": names[suggested],
        "action": np.where(agree, "relabel", "exclude"), "p_label": p_label, "p_suggested": probs[rows, suggested],
        "dynamics_score": dyn, "dynamics_flag": dyn >= MISLABEL_MARGIN, "cleanlab_score": cl_score,
        "cleanlab_flag": cl_flag, "combined_score": combined, "combined_flag": cl_flag & (dyn >= MISLABEL_MARGIN),
    })
    return table.sort_values("combined_score", ascending=False, kind="stable").reset_index(drop=True)


def suggestion_changes(rows: pd.DataFrame, classes: tuple[str, ...] | list[str]) -> list[tuple[str, int, int]]:
    """The label-set edits that accept `rows`' suggestions: (split, index, the suggested class or EXCLUDED)."""
    return [("train", int(i), classes.index(s) if a == "relabel" else EXCLUDED)
            for i, s, a in zip(rows["index"], rows["suggested"], rows["action"])]


def auroc(score: np.ndarray, truth: np.ndarray) -> float:
    """The area under the ROC curve of `score` for the boolean `truth` (the Mann-Whitney statistic)."""
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def detection_metrics(table: pd.DataFrame, wrong: set[int] | np.ndarray, share: float = 1.0) -> pd.DataFrame:
    """How well each detector finds the known errors `wrong` (indices): precision at AT, the flagged list's size,
    precision and recall, and the score's AUROC; one row per detector. A table of a random `share` of the images
    (some folds only) is scored at AT times that share (P@1000 of 50,000 images is P@250 of a quarter of them)."""
    truth = table["index"].isin(np.asarray(list(wrong) if isinstance(wrong, set) else wrong)).to_numpy()
    rows = []
    for name in DETECTORS:
        score, flag = table[f"{name}_score"].to_numpy(), table[f"{name}_flag"].to_numpy()
        order = np.argsort(-score, kind="stable")
        row: dict[str, Any] = {"detector": name}
        for k in AT:
            top = max(1, round(k * share))
            row[f"P@{k}"] = float(truth[order[:top]].mean()) if len(order) >= top else float("nan")
        row.update(flagged=int(flag.sum()), precision=float(truth[flag].mean()) if flag.any() else float("nan"),
                   recall=float(truth[flag].sum() / max(truth.sum(), 1)), auroc=auroc(score, truth))
        rows.append(row)
    return pd.DataFrame(rows)


def format_metrics(metrics: pd.DataFrame) -> list[str]:
    lines = [(f"  {'detector':<10}{'P@100':>7}{'P@500':>7}{'P@1000':>8}{'flagged':>9}{'precision':>10}"
              f"{'recall':>8}{'AUROC':>7}")]
    for _, r in metrics.iterrows():
        lines.append(f"  {r['detector']:<10}{r['P@100']:>7.1%}{r['P@500']:>7.1%}{r['P@1000']:>8.1%}{r['flagged']:>9,}"
                     f"{r['precision']:>10.1%}{r['recall']:>8.1%}{r['auroc']:>7.3f}")
    return lines


# -- saved with the run -----------------------------------------------------------------------------------------


def save_results(run_path: Path, train: pd.DataFrame, test: pd.DataFrame | None, summary: dict[str, Any]) -> Path:
    folder = Path(run_path) / RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "train.csv", train.to_csv(index=False, float_format="%.5f"))
    if test is not None:
        atomic_write_text(folder / "test.csv", test.to_csv(index=False, float_format="%.5f"))
    atomic_write_json(folder / "summary.json", summary)
    return folder


def load_results(run_path: Path, split: str = "train") -> pd.DataFrame | None:
    """The saved per-image table of a split (the likeliest error first), or None before a search."""
    try:
        return pd.read_csv(Path(run_path) / RESULTS_DIR / f"{split}.csv")
    except (OSError, ValueError):
        return None


def load_summary(run_path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_path) / RESULTS_DIR / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def flagged(table: pd.DataFrame, detector: str = "combined") -> pd.DataFrame:
    """The images a detector flags, the likeliest first by its score."""
    return table[table[f"{detector}_flag"]].sort_values(f"{detector}_score", ascending=False, kind="stable")
