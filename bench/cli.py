"""`python -m bench`: run the suite, print tables and ratios, write JSON, plots and README.

    python -m bench                     full run (~10-20 minutes), writes bench/results/
    python -m bench --quick             a few seconds per path, writes bench/results/partial.json
    python -m bench --only ssh,ptunnel  only these paths (also a partial run)
    python -m bench --mtu 1500          only the headline table (also a partial run)
    python -m bench --natlab            also the NAT-lab loss benchmarks (root only)

The loopback suite runs once per table, each in a network namespace of its own whose loopback
has that table's MTU (bench/netns.py): first MTU 1,500, the headline, then the default 65,536,
where ptunnel's datagrams grow to 65,000 bytes. Without root there is no namespace: the
MTU-1,500 table says so, and the 65,536 one runs on this machine's own loopback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import plots, report
from bench.natlab import goodput_table, run_natlab
from bench.netns import LOOPBACK_DEFAULT_MTU, loopback_namespace, why_unavailable
from bench.paths.base import Adapter
from bench.paths.direct import Direct
from bench.paths.hyper import Hyper, ensure_installed
from bench.paths.ptunnel import Ptunnel
from bench.paths.quic import Quic
from bench.paths.socat import Socat
from bench.paths.ssh import Ssh
from bench.procs import Unavailable
from bench.suite import FULL, QUICK, Settings, run_suite
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
    "ptunnel": Ptunnel,  # the default build: mypyc-compiled where it was built
    "ptunnel-pure": lambda: Ptunnel(pure=True),
}
# The loopback tables, headline first: (MTU, label).
TABLES = (
    (1500, "loopback at MTU 1,500 (what internet paths carry)"),
    (LOOPBACK_DEFAULT_MTU, "loopback at MTU 65,536 (ptunnel's datagrams grow to 65,000 bytes)"),
)


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
    parser.add_argument("--mtu", type=int, choices=[mtu for mtu, _ in TABLES],
                        help="only the loopback table of this MTU")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("-v", "--verbose", action="store_true")
    # Internal: run the suite here (inside a table's namespace) and write its summaries to FILE.
    parser.add_argument("--summaries-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(PATHS) - {"none"}
        if unknown:
            parser.error(f"unknown path(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(PATHS)}")
    return args


def _suite_here(keys: list[str], settings: Settings,
                show: Callable[[str], None]) -> list[dict[str, Any]]:
    adapters = [PATHS[k]() for k in PATHS if k in keys]
    results = run_suite(adapters, settings, show) if adapters else []
    return [report.summarize(r) for r in results]


def _suite_in_namespace(mtu: int, argv: list[str],
                        show: Callable[[str], None]) -> list[dict[str, Any]]:
    """This suite again, inside a fresh namespace whose loopback has `mtu` (progress shows)."""
    with loopback_namespace(mtu) as ns, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summaries.json"
        show(f"loopback MTU {mtu:,}: namespace {ns}")
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "bench", *argv,
                               "--summaries-to", str(out)], check=False)
        if done.returncode != 0 or not out.exists():
            raise Unavailable(f"the suite in namespace {ns} failed (exit {done.returncode})")
        summaries: list[dict[str, Any]] = json.loads(out.read_text())
        return summaries


def run_tables(args: argparse.Namespace, keys: list[str], settings: Settings,
               show: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each loopback table: {"mtu", "label", "paths": summaries, "ratios"} or "unavailable"."""
    inner = ["--only", ",".join(keys), *(["--quick"] if args.quick else []),
             *(["-v"] if args.verbose else [])]
    no_namespace = why_unavailable()
    if no_namespace is None and "hyperdht" in keys:
        # A table's namespace has only its loopback: fetch the pinned hyperdht out here.
        try:
            ensure_installed()
        except Unavailable as exc:
            show(f"hyperdht: unavailable: {exc}")
    tables: list[dict[str, Any]] = []
    for mtu, label in TABLES:
        if args.mtu is not None and mtu != args.mtu:
            continue
        table: dict[str, Any] = {"mtu": mtu, "label": label, "paths": []}
        try:
            if no_namespace is None:
                table["paths"] = _suite_in_namespace(mtu, inner, show)
            elif mtu == LOOPBACK_DEFAULT_MTU:
                table["label"] += f", on this machine's own loopback ({no_namespace})"
                table["paths"] = _suite_here(keys, settings, show)
            else:
                raise Unavailable(no_namespace)
        except Unavailable as exc:
            table["unavailable"] = str(exc)
            show(f"loopback MTU {mtu:,}: unavailable: {exc}")
        table["ratios"] = report.ratios(table["paths"])
        tables.append(table)
    return tables


def print_table(table: dict[str, Any]) -> None:
    print()
    print(f"## {table['label']}")
    if "unavailable" in table:
        print(f"unavailable: {table['unavailable']}")
        return
    summaries = table["paths"]
    print(format_table(report.MAIN_HEADERS, report.main_rows(summaries)))
    for line in report.notes(summaries):
        print(f"  {line}")
    print()
    print(format_table(report.PROCESS_HEADERS, report.process_rows(summaries)))
    print()
    for line in report.ratio_lines(table["ratios"]):
        print(line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    # Helpers run as `python -m bench.x`, some inside namespaces: make the package importable
    # wherever the suite was started from.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    keys = args.only.split(",") if args.only else list(PATHS)
    partial = bool(args.quick or args.only or args.mtu)
    settings = QUICK if args.quick else FULL
    show = progress_printer(time.monotonic())
    if args.summaries_to is not None:
        args.summaries_to.write_text(json.dumps(_suite_here(keys, settings, show)))
        return 0
    load_before = os.getloadavg()[0]
    tables = run_tables(args, keys, settings, show)
    natlab = (run_natlab(settings.bulk_seconds + 1.0, settings.natlab_rounds, show).to_json()
              if args.natlab else None)
    # The plots and older readers take the headline: the first table that ran.
    headline = next((t for t in tables if "unavailable" not in t), None)
    summaries = headline["paths"] if headline else []
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
        "tables": tables,
        "headline_mtu": headline["mtu"] if headline else None,
        "paths": summaries,
        "ratios": report.ratios(summaries),
        "natlab": natlab,
    }
    for table in tables:
        print_table(table)
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
