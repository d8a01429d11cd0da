"""`make demo`: run what ptunnel can do end to end on this machine and report what it measured.

Today that is the trust set-up of two machines (two state directories): one creates a network, the
other joins it with the printed code, and both are checked to be in the same network with private
key files. Every line of the report is computed here, never assumed.
"""

from __future__ import annotations

import argparse
import json
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def ptunnel(home: Path, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tunnel", argv[0], "--home", str(home), *argv[1:]],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"demo: `ptunnel {' '.join(argv)}` failed: {done.stderr.strip()}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunnel.demo", description=__doc__)
    parser.add_argument("--nat", action="store_true", help="run through the NAT lab (root)")
    args = parser.parse_args(argv)
    if args.nat:
        print("demo: the NAT-lab demo needs the forwarding layer, which is not built yet")
        return 2
    with tempfile.TemporaryDirectory(prefix="ptunnel-demo-") as tmp:
        home, laptop = Path(tmp) / "home", Path(tmp) / "laptop"
        started = time.perf_counter()
        ptunnel(home, "init")
        code = ptunnel(home, "invite").strip()
        ptunnel(laptop, "join", code)
        ids = [json.loads(ptunnel(h, "id", "--json")) for h in (home, laptop)]
        elapsed = time.perf_counter() - started
        modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in sorted(home.iterdir())}
        same = ids[0]["network_id"] == ids[1]["network_id"]
        print(f"home node:    {ids[0]['fingerprint']}  network {ids[0]['network_id']}")
        print(f"laptop node:  {ids[1]['fingerprint']}  network {ids[1]['network_id']}")
        print(f"same network: {'yes' if same else 'NO'}; join code {len(code)} characters")
        print(f"key files:    {', '.join(f'{n} {m}' for n, m in modes.items())}")
        print(f"took {elapsed:.2f} s for init + invite + join + 2 x id")
        return 0 if same and set(modes.values()) == {"0o600"} else 1


if __name__ == "__main__":
    raise SystemExit(main())
