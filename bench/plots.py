"""PNG plots of a run (optional: needs matplotlib, `pip install '.[bench]'`).

throughput.png: bulk MB/s per path, one and eight connections; latency_cdf.png: the 64-byte
round-trip CDF per path on a log axis; goodput_loss.png: NAT-lab goodput against packet loss.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """Write the plots for `doc` (the results JSON) into `out`; the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    written: list[Path] = []
    paths = [p for p in doc["paths"] if "unavailable" not in p]
    title = f"{doc['date']}, {doc['machine']['cpus']} vCPUs, loopback"

    if paths:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        names = [p["name"] for p in paths]
        xs = range(len(names))
        width = 0.4
        one = [(p["bulk1_bytes_per_s"] or 0) / 1e6 for p in paths]
        many = [(p["bulk8_bytes_per_s"] or 0) / 1e6 for p in paths]
        ax.bar([x - width / 2 for x in xs], one, width, label="1 connection")
        ax.bar([x + width / 2 for x in xs], many, width,
               label=f"{doc['settings']['parallel']} connections")
        ax.set_xticks(list(xs), names)
        ax.set_yscale("log")
        ax.set_ylabel("MB/s (log scale)")
        ax.set_title(f"Bulk throughput per path ({title})")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / "throughput.png", plt))

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for p in paths:
            points = p["latency_cdf"]
            if points:
                ax.plot([v for v, _ in points], [f for _, f in points], label=p["name"])
        ax.set_xscale("log")
        ax.set_xlabel("round-trip time, µs (log scale)")
        ax.set_ylabel("fraction of round trips")
        ax.set_title(f"64-byte request/response latency ({title})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / "latency_cdf.png", plt))

    natlab = doc.get("natlab")
    if natlab and natlab["goodput_bytes_per_s"]:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        levels = natlab["loss_percent"]
        for name, by in natlab["goodput_bytes_per_s"].items():
            ys = [by.get(str(n)) for n in levels]
            nan = float("nan")  # a failed measurement leaves a gap in the line
            ax.plot(levels, [nan if y is None else y / 1e6 for y in ys], marker="o", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("random packet loss on the path, %")
        ax.set_ylabel("goodput, MB/s (log scale)")
        ax.set_title("Goodput against loss (NAT lab, one TCP connection)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / "goodput_loss.png", plt))
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
