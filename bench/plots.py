"""PNG plots of the latency and lateness distributions (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

COLORS = {"huey@FULL": "tab:red", "ours@FULL": "tab:blue", "ours@NORMAL": "tab:green"}
LABELS = {"huey@FULL": "Huey (SqliteHuey, FULL)", "ours@FULL": "ours, FULL",
          "ours@NORMAL": "ours, NORMAL (default)"}  # fmt: skip


def _cdf(ax: Axes, by_system: dict[str, list[float]], title: str, xlabel: str) -> None:
    for system, seconds in by_system.items():
        ms = sorted(max(s * 1000, 1e-3) for s in seconds)
        if not ms:
            continue
        ys = [(i + 1) / len(ms) for i in range(len(ms))]
        ax.step(ms, ys, where="post", color=COLORS.get(system), label=LABELS.get(system, system))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of runs")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def plot_all(samples: dict[str, dict[str, list[float]]], out: Path) -> list[str]:
    """One figure for start latency (one panel per offered rate), one for timer lateness
    (one panel per load); every repetition's samples pooled. Returns the file names."""
    written = []
    for prefix, xlabel, name in (
        ("latency", "start minus arrival (ms, log scale)", "latency_cdf.png"),
        ("lateness", "start minus due time (ms, log scale; early starts at the left edge)",
         "lateness_cdf.png"),
    ):  # fmt: skip
        keys = [k for k in samples if k.split()[0] == prefix]
        if not keys:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            _cdf(ax, samples[key], _title(key), xlabel)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def _title(key: str) -> str:
    params = dict(part.split("=") for part in key.split()[1:])
    if key.startswith("latency"):
        return (
            f"start latency, open loop at {float(params['rate']):g} runs/s ({params['runs']} runs)"
        )
    return f"timer lateness, {params['runs']} runs due over {float(params['window']):g} s"
