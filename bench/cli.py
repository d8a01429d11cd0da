"""`python -m bench`: run the suite, print tables and ratios, write JSON, plots and README.

    python -m bench                     full run (~5-10 minutes), writes bench/results/
    python -m bench --quick             a few seconds per path, writes bench/results/partial.json
    python -m bench --only ssh,ptunnel  only these paths (also a partial run)
    python -m bench --natlab            also the NAT-lab loss benchmarks (root only)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import plots, report
from bench.natlab import goodput_table, run_natlab
from bench.paths.base import Adapter
from bench.paths.direct import Direct
from bench.paths.hyper import Hyper
from bench.paths.ptunnel import Ptunnel
from bench.paths.quic import Quic
from bench.paths.socat import Socat
from bench.paths.ssh import Ssh
from bench.suite import FULL, QUICK, run_suite
from bench.table import format_table

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent

# Path key (for --only) -> adapter factory, in table order: the baseline, the peers, ptunnel.
PATHS: dict[str, Callable[[], Adapter]] = {
    "direct": Direct,
    "ssh": Ssh,
    "socat": Socat,
    "aioquic": Quic,
    "hyperdht": Hyper,
    "ptunnel": Ptunnel,
}


def progress_printer(started: float) -> Callable[[str], None]:
    def show(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)
    return show


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for development")
    parser.add_argument("--only", metavar="PATH,...",
                        help=f"comma-separated subset of: {', '.join(PATHS)} "
                             "(--only none: NAT lab only)")
    parser.add_argument("--natlab", action="store_true",
                        help="also run the NAT-lab loss benchmarks (needs root)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(PATHS) - {"none"}
        if unknown:
            parser.error(f"unknown path(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(PATHS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    # Helpers run as `python -m bench.x`, some inside namespaces: make the package importable
    # wherever the suite was started from.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    keys = args.only.split(",") if args.only else list(PATHS)
    partial = bool(args.quick or args.only)
    settings = QUICK if args.quick else FULL
    show = progress_printer(time.monotonic())
    load_before = os.getloadavg()[0]
    adapters = [PATHS[k]() for k in PATHS if k in keys]
    results = run_suite(adapters, settings, show) if adapters else []
    natlab = (run_natlab(settings.bulk_seconds + 1.0, settings.natlab_rounds, show).to_json()
              if args.natlab else None)
    summaries = [report.summarize(r) for r in results]
    doc: dict[str, Any] = {
        "date": report.now_utc(),
        "machine": report.machine(),
        # Other work on the machine skews absolute numbers (ratios much less): record it.
        "loadavg_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "settings": {"rounds": settings.rounds, "bulk_seconds": settings.bulk_seconds,
                     "round_trips": settings.round_trips, "connects": settings.connects,
                     "idle_streams": settings.idle_streams, "parallel": settings.parallel,
                     "natlab_rounds": settings.natlab_rounds if args.natlab else None,
                     "quick": args.quick, "only": keys},
        "paths": summaries,
        "ratios": report.ratios(summaries),
        "natlab": natlab,
    }
    print()
    print(format_table(report.MAIN_HEADERS, report.main_rows(summaries)))
    for line in report.notes(summaries):
        print(f"  {line}")
    print()
    print(format_table(report.PROCESS_HEADERS, report.process_rows(summaries)))
    print()
    for line in report.ratio_lines(doc["ratios"]):
        print(line)
    natlab_md = None
    if natlab is not None:
        print()
        print(goodput_table(natlab))
        natlab_md = goodput_table(natlab, markdown=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "partial.json" if partial else "results.json"
    tmp = args.out / (name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, args.out / name)
    print(f"\nwrote {args.out / name}")
    if not partial:
        if plots.available():
            for path in plots.write_plots(doc, args.out):
                print(f"wrote {path}")
        else:
            print("no plots: matplotlib is not installed (pip install '.[bench]')")
        (args.out / "README.md").write_text(report.results_readme(doc, natlab_md))
        print(f"wrote {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
