"""``bench/throughput.png``: throughput against jobs submitted, Courier and the baseline."""

from __future__ import annotations

from pathlib import Path

from bench.scenarios import Cell


def plot(courier: list[Cell], baseline: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    latencies = sorted({c.latency for c in courier + baseline})
    single = [c for c in courier if c.processes == 1]
    scaled = [c for c in courier if c.processes > 1]
    processes = max((c.processes for c in scaled), default=0)
    series = (
        (single, "-o", "Courier"),
        (scaled, ":^", f"Courier, {processes} workers"),
        (baseline, "--s", "baseline"),
    )
    for index, latency in enumerate(latencies):
        color = colors[index % len(colors)]
        for cells, style, label in series:
            points = sorted(
                (c.jobs, c.throughput) for c in cells if c.latency == latency and c.throughput
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, color=color, label=f"{label}, {latency:g} s latency")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("jobs submitted")
    ax.set_ylabel("throughput (jobs/s)")
    ax.set_title("Courier (gevent workers, -c 1000) vs the seeds' prefork baseline (-c 2)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
