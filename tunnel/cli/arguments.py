"""argparse types shared by the subcommands: each turns a bad value into argparse's one-line usage
error instead of a traceback."""

from __future__ import annotations

import argparse

from rendezvous.protocol import normalize_name
from tunnel.addresses import Addr, parse_endpoint, parse_endpoints
from tunnel.keys.netkeys import decode_key


def endpoint_arg(text: str) -> Addr:
    """`HOST:PORT`."""
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def endpoints_arg(text: str) -> list[Addr]:
    """`HOST:PORT[,HOST:PORT...]`: servers of one deployment, first one first."""
    try:
        return parse_endpoints(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_arg(text: str) -> Addr:
    """`[HOST:]PORT`, the host defaulting to 127.0.0.1 (local listeners and targets)."""
    try:
        return parse_endpoint(text, default_host="127.0.0.1")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_number_arg(text: str) -> int:
    """A UDP or TCP port number, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


def key_arg(text: str) -> bytes:
    """A public key as `ptunnel id` prints it."""
    try:
        return decode_key(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def name_arg(text: str) -> str:
    """A node or service name, folded to lower case (names are case-insensitive, like DNS)."""
    try:
        return normalize_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
