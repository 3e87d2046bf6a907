"""Curation plots (PNG, matplotlib Agg): score histogram and kept fraction against threshold."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_score_histogram(path: Path, max_scores: list[float], all_scores: list[float],
                         thresholds: list[float], title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    values = all_scores + max_scores + thresholds
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    bins = [lo + (hi - lo) * k / 40 for k in range(41)] if hi > lo else 40
    if all_scores:
        ax.hist(all_scores, bins=bins, alpha=0.5, label="every candidate")
    if max_scores:
        ax.hist(max_scores, bins=bins, alpha=0.7, label="chosen (max per input)")
    for tau in thresholds:
        ax.axvline(tau, linestyle="--", linewidth=1, color="k")
    ax.set_xlabel("self-consistency score")
    ax.set_ylabel("count")
    ax.set_title(title)
    if all_scores or max_scores:
        ax.legend()
    _save(fig, path)


def kept_fraction_curve(max_scores: list[float], points: int = 101) -> tuple[list[float], list[float]]:
    """(thresholds, fraction of inputs kept) over an even grid spanning the observed scores up to 1."""
    if not max_scores:
        return [], []
    lo = min(0.0, min(max_scores))
    hi = max(1.0, max(max_scores))
    taus = [lo + (hi - lo) * k / (points - 1) for k in range(points)]
    n = len(max_scores)
    return taus, [sum(s >= t for s in max_scores) / n for t in taus]


def plot_kept_vs_threshold(path: Path, max_scores: list[float], thresholds: list[float], title: str) -> None:
    taus, fractions = kept_fraction_curve(max_scores)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(taus, fractions)
    n = max(len(max_scores), 1)
    for tau in thresholds:
        frac = sum(s >= tau for s in max_scores) / n
        ax.plot([tau], [frac], "o")
        ax.annotate(f"{tau:g}: {frac:.2f}", (tau, frac), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("threshold tau")
    ax.set_ylabel("fraction of inputs kept")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
