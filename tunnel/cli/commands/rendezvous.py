"""`ptunnel rendezvous --listen HOST:PORT [--db PATH | --store redis://HOST:PORT/DB]
[--networks FILE] [--no-relay] [--show-key]`: run a rendezvous server, or show its key."""

from __future__ import annotations

import argparse
import errno
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rendezvous.admission import OPEN, Admission, parse_networks
from rendezvous.protocol import MAX_MEMBERS_LIMIT
from tunnel.addresses import format_endpoint, parse_endpoint
from tunnel.cli.arguments import endpoint_arg, port_number_arg
from tunnel.cli.config import RENDEZVOUS_KEYS
from tunnel.cli.context import Context
from tunnel.cli.runtime import run_async
from tunnel.errors import RuntimeFailure, UserError, os_reason, path_error

NAME = "rendezvous"
ORDER = 40
HELP = "run a rendezvous server (introduces and relays)"
DESCRIPTION = """\
Run the small UDP server that nodes register with (`--rendezvous HOST:PORT` on the nodes). It
learns only network ids (public keys), never a network secret: it can introduce and relay, but
cannot read, alter or impersonate. Registrations live in SQLite, so a restart loses nothing;
with --store redis://HOST:PORT/DB they live in Redis instead, and several servers sharing that
Redis (and one `rendezvous.key`, copied to each) serve the same networks. While Redis cannot be
reached the server answers every request with a temporary refusal.
A second UDP port (PORT+1 unless --netcheck-port) answers `ptunnel netcheck` probes.

Relayed traffic is capped per node, per network and in all (--relay-rate, --relay-network-rate,
--relay-total-rate, in bytes per second); a node relays only with the token the server gave it
when it introduced the two nodes. The server is open to every network unless --networks names a
file of the network ids it serves (one a line, as `ptunnel id` prints them, `#` comments):
other networks are then refused, and nothing is relayed for them.

The server has a static key (`rendezvous.key` beside the database, created on first start):
nodes seal every request to it and check that every reply comes from it. It is printed at start
and by --show-key; nodes get it from a ptn2 join code, `rendezvous_key`, or pin it on first use.

  ptunnel rendezvous --listen 0.0.0.0:7000
  ptunnel rendezvous --listen [::]:7000 --networks /etc/ptunnel/networks
  ptunnel rendezvous --show-key
"""
CONFIG_KEYS = RENDEZVOUS_KEYS
DEFAULT_CONFIG = "rendezvous.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", type=endpoint_arg, metavar="HOST:PORT",
                        help="UDP address to listen on (default 0.0.0.0:7000)")
    parser.add_argument("--netcheck-port", type=port_number_arg, metavar="PORT",
                        help="second UDP port for NAT mapping checks (default PORT+1)")
    parser.add_argument("--db", metavar="PATH",
                        help="SQLite database (default $PTUNNEL_HOME/rendezvous.db); its "
                        "directory holds the server's key, with --store too")
    parser.add_argument("--store", metavar="redis://HOST:PORT/DB",
                        help="keep the state in Redis (several servers may share it) instead "
                        "of --db; the key file stays beside --db")
    parser.add_argument("--server-id", metavar="ID",
                        help="this server's name among those on one Redis, kept across "
                        "restarts (default HOSTNAME:PORT)")
    parser.add_argument("--no-relay", dest="relay", action="store_const", const=False,
                        default=None, help="never relay traffic between nodes")
    parser.add_argument("--relay-rate", type=int, metavar="BYTES_PER_S",
                        help="relay budget per node (default 12500000)")
    parser.add_argument("--relay-network-rate", type=int, metavar="BYTES_PER_S",
                        help="relay budget per network (default 25000000)")
    parser.add_argument("--relay-total-rate", type=int, metavar="BYTES_PER_S",
                        help="relay budget of the whole server (default 125000000)")
    parser.add_argument("--networks", metavar="FILE",
                        help="serve only the network ids listed in FILE (default: every network)")
    parser.add_argument("--max-members", type=int, metavar="N",
                        help="nodes one network may register at once (1-510, default 256)")
    parser.add_argument("--show-key", action="store_true",
                        help="print the server's public key (creating it if needed) and exit")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: tuple[str, int]
    db: Path
    relay: bool
    netcheck_port: int | None
    relay_rate: float
    relay_network_rate: float
    relay_total_rate: float
    admission: Admission
    max_members: int
    store: str | None  # redis://HOST:PORT/DB, or None for the SQLite file `db`
    server_id: str | None = None  # None: HOSTNAME:PORT (only used with a Redis store)


def settings(ctx: Context) -> ServerSettings:
    """Flags > environment > rendezvous.yaml > defaults, already merged into `ctx.config`."""
    config = ctx.config
    listen = config["listen"]
    if isinstance(listen, str):
        listen = parse_endpoint(listen)
    db = Path(config["db"]).expanduser() if config.get("db") else ctx.home / "rendezvous.db"
    nport = config.get("netcheck_port")
    networks = config.get("networks")
    max_members = int(config["max_members"])
    if not 1 <= max_members <= MAX_MEMBERS_LIMIT:
        raise UserError(f"max_members is {max_members}; use 1-{MAX_MEMBERS_LIMIT} (a member list "
                        "carries at most that many nodes)")
    return ServerSettings(
        (str(listen[0]), int(listen[1])), db, bool(config.get("relay", True)),
        int(nport) if nport is not None else None, _rate(config, "relay_rate"),
        _rate(config, "relay_network_rate"), _rate(config, "relay_total_rate"),
        _admission(Path(networks).expanduser()) if networks else OPEN, max_members,
        _store_url(config.get("store")), _server_id(config.get("server_id")))


def _server_id(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text or len(text) > 200 or not text.isprintable() or " " in text:
        raise UserError(f"server id {text!r} is not usable; give --server-id (or `server_id:`) "
                        "a short name without spaces, such as eu-1")
    return text


def _store_url(value: Any) -> str | None:
    if not value:
        return None
    from rendezvous.redisstore import parse_store_url

    try:
        return parse_store_url(str(value)).url
    except ValueError as exc:
        raise UserError(f"{exc} (--store or `store:`)") from None


def _rate(config: dict[str, Any], key: str) -> float:
    value = int(config[key])
    if value <= 0:
        flag = "--" + key.replace("_", "-")
        raise UserError(f"{key} is {value}; give {flag} a number of bytes per second above 0 "
                        "(--no-relay turns the relay off)")
    return float(value)


def _admission(path: Path) -> Admission:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise path_error(exc, f"read the networks file {path}", "check --networks") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file of network ids; check --networks") from None
    try:
        return parse_networks(text, str(path))
    except ValueError as exc:
        raise UserError(f"{exc}; fix the file given to --networks") from None


def _key(db: Path) -> bytes:
    from rendezvous.server import key_path, load_or_create_key

    path = key_path(db)
    try:
        private, created = load_or_create_key(path)
    except OSError as exc:
        raise path_error(exc, f"create or read the rendezvous key {path}",
                         "pass another --db (the key lives beside it)") from None
    if created:
        sys.stderr.write(f"created the rendezvous key {path}\n")
    return private


def run(args: argparse.Namespace, ctx: Context) -> int:
    from rendezvous.server import describe_key, ensure_state_dir, open_store, serve
    from rendezvous.store import StoreUnavailable

    s = settings(ctx)
    try:
        ensure_state_dir(s.db.parent)
    except OSError as exc:
        raise path_error(exc, f"create the directory of the database {s.db}",
                         "pass another --db") from None
    private = _key(s.db)
    if args.show_key:
        ctx.out(f"rendezvous {describe_key(private)}")
        return 0
    try:
        open_store(s.db, s.store).close()  # fail here, in one line, on an unusable store
    except StoreUnavailable as exc:
        raise UserError(f"cannot reach the store {str(exc).rstrip('.')}; start Redis there or "
                        "check --store (host, port, password)") from None
    except (ValueError, sqlite3.Error, OSError) as exc:
        raise UserError(f"cannot use the database {s.db}: {exc}; pass another --db") from None
    ctx.out(f"rendezvous {describe_key(private)}; nodes pin it on first contact, or take it from "
            "`ptunnel invite` codes or `rendezvous_key`")
    try:
        # Runs until a stopping signal, which raises Interrupted (exit status 130/143/129).
        run_async(lambda: serve(s.listen, s.db, s.relay, s.netcheck_port, s.relay_rate,
                                relay_network_rate=s.relay_network_rate,
                                relay_total_rate=s.relay_total_rate, admission=s.admission,
                                static_private=private, max_members=s.max_members,
                                store_url=s.store, server_id=s.server_id))
    except OSError as exc:
        raise listen_error(s.listen, exc) from None
    return 0


def listen_error(listen: tuple[str, int], exc: OSError) -> UserError:
    """A port in use is a failure of this run (exit 1: it works once the other server stops);
    an address this machine does not have, or a port it may not bind, is a mistake to fix."""
    line = (f"cannot listen on {format_endpoint(listen)} (or its netcheck port): "
            f"{os_reason(exc)}; choose another --listen")
    if exc.errno == errno.EADDRINUSE:
        return RuntimeFailure(line.replace("; choose", "; stop the server that holds it, or "
                                           "choose", 1))
    return UserError(line)
