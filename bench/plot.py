"""The suite's figure: throughput and p99 against concurrency, one line per scenario.

Why this module exists: a table of sweeps hides the knee; a plot shows where
each scenario stops gaining throughput and starts queueing. Written by
`bench.suite` next to its JSON (`bench/results/sweep.png`), and re-drawable
from a saved report: `python -m bench.plot bench/results/sweep.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(13, 5))
    for sweep in report["sweeps"]:
        steps = sweep["steps"]
        if not steps:
            continue
        xs = [s["concurrency"] for s in steps]
        label = sweep["scenario"]
        (line,) = ax_rps.plot(xs, [s["rps"] for s in steps], marker="o", label=label)
        ax_p99.plot(xs, [s["p99_ms"] or 0 for s in steps], marker="o", label=label)
        if sweep.get("saturation") is not None:
            sat = next(s for s in steps if s["concurrency"] == sweep["saturation"])
            ax_rps.plot(
                [sat["concurrency"]],
                [sat["rps"]],
                marker="*",
                markersize=16,
                color=line.get_color(),
            )
    load = report.get("outside_load", {})
    title = (
        f"{report['machine']['cores']} cores, {report['workers']} workers, "
        f"outside load median {load.get('median_cores', 0):.2f} cores "
        f"(max {load.get('max_cores', 0):.2f}) - {report['started']}"
    )
    if not load.get("quiet"):
        title = "LOADED MACHINE (other work shared the cores): not capacity figures. " + title
    for ax, ylabel in ((ax_rps, "successful calls/s"), (ax_p99, "p99 latency, ms")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_yscale("log")
        ax.set_xlabel("calls in flight (closed loop)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_rps.set_title("throughput (* = saturation point)")
    ax_p99.set_title("p99 latency")
    ax_p99.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/sweep.json")
    print(plot(json.loads(source.read_text()), source.with_suffix(".png")))
