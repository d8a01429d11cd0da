"""`python -m bench.loadcli bulk --port P [--host H] --seconds S [--streams N]`: one bulk
measurement, printed as one JSON line. The NAT lab runs it inside a namespace with
`ip netns exec`, where the harness's own load generator cannot reach."""

from __future__ import annotations

import argparse
import json
import sys

from bench.load import HOST, LOAD_ERRORS, bulk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadcli")
    parser.add_argument("mode", choices=("bulk",))
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        result = bulk(args.port, args.seconds, args.streams, host=args.host)
    except LOAD_ERRORS as exc:
        # Exit 0: the caller reads the error from the JSON line (stderr is not kept).
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 0
    print(json.dumps({"bytes": result.bytes_moved, "seconds": result.seconds,
                      "rate": result.rate, "setup_retries": result.setup_retries}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
