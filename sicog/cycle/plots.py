"""The report's figures: the rows side by side, training curves, and the curation diagnostics."""
from __future__ import annotations

from pathlib import Path

from sicog.cycle.outputs import Model
from sicog.data.records import read_records


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_variants(path: Path, columns: list[str], rows: list[dict]) -> None:
    import numpy as np

    plt = _pyplot()
    show = [c for c in ("QA overall", "POPE F1", "Caption recall", "Caption halluc.") if c in columns]
    x = np.arange(len(show))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(show) + 0.4 * len(rows)), 4))
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [100 * r[c] for c in show], width, yerr=[100 * r[f"{c} std"] for c in show],
               label=r["label"], capsize=2)
    ax.set_xticks(x + width * (len(rows) - 1) / 2, show)
    ax.set_ylabel("%")
    ax.set_title("Mini world: variants side by side")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(path: Path, models: list[Model]) -> None:
    """The training loss of each model against its optimizer step, labelled by its step name."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for model in models:
        points = [(r["step"], r["loss"]) for r in read_records(model.train_log) if "loss" in r]
        if points:
            ax.plot(*zip(*points), label=model.step, linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Training curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_diagnostics(folder: Path, diag: dict) -> None:
    """threshold_curve.png (kept fraction and precision against tau) and score_histogram.png."""
    if not diag:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, d in diag.items():
        taus = [t["tau"] for t in d["by_threshold"]]
        ax.plot(taus, [t["kept_fraction"] for t in d["by_threshold"]], "--o", label=f"{kind}: kept fraction")
        ax.plot(taus, [t["precision"] for t in d["by_threshold"]], "-s", label=f"{kind}: precision of kept")
    ax.set_xlabel("threshold tau")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("Self-consistency threshold")
    fig.tight_layout()
    fig.savefig(folder / "threshold_curve.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(diag), figsize=(5 * len(diag), 3.5), squeeze=False)
    for ax, (kind, d) in zip(axes[0], diag.items()):
        good = [s for s, y in zip(d["scores"], d["correct"]) if y]
        bad = [s for s, y in zip(d["scores"], d["correct"]) if not y]
        ax.hist([good, bad], bins=20, label=["correct", "incorrect"], stacked=False)
        ax.set_title(f"{kind}: self-consistency score (AUROC {d['auroc']:.2f})")
        ax.set_xlabel("score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "score_histogram.png", dpi=120)
    plt.close(fig)
