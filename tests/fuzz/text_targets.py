"""Fuzz targets of what people type or edit: join codes and the YAML config files.

Inputs are bytes; a join code is read as UTF-8 (undecodable bytes replaced, as a terminal would
show them), a config file is written as is and loaded, so its UTF-8 check is fuzzed too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests.fuzz.target import Check, Target
from tunnel.cli.config import NODE_KEYS, RENDEZVOUS_KEYS, Key, load_file
from tunnel.errors import ConfigError
from tunnel.keys.joincode import (
    JoinCode,
    JoinCodeError,
    decode_join_code,
    encode_join_code,
    encode_join_code_v2,
)
from tunnel.keys.netkeys import NETWORK_SECRET_SIZE

CONFIGS = Path(__file__).resolve().parents[2] / "tunnel" / "data"  # the shipped samples


def setup_join_code() -> tuple[Check, list[bytes]]:
    code = encode_join_code(bytes(range(NETWORK_SECRET_SIZE)))
    code_v2 = encode_join_code_v2(bytes(range(NETWORK_SECRET_SIZE)), bytes(range(32, 64)),
                                  ["rdv.example.org:7000", "[2001:db8::1]:7000"])
    seeds = [code.encode(), code.upper().replace("-", " ").encode(), code_v2.encode(),
             b"ptn1-", b"ptn2-", b""]

    def check(data: bytes) -> None:
        try:
            secret = decode_join_code(data.decode("utf-8", errors="replace"))
        except JoinCodeError as error:
            assert str(error), "an error without words"
            return
        assert isinstance(secret, JoinCode) and len(secret.secret) == NETWORK_SECRET_SIZE
        assert secret.server_key is None or len(secret.server_key) == 32

    return check, seeds


def _config(keys: Mapping[str, Key], example: str) -> Check:
    # removed when the check is garbage-collected: the closure holds the only reference
    directory = tempfile.TemporaryDirectory(prefix="ptunnel-fuzz-")
    path = Path(directory.name) / example

    def check(data: bytes) -> None:
        assert directory.name  # keeps the directory alive as long as the check
        path.write_bytes(data)
        try:
            values = load_file(path, keys)
        except ConfigError as error:
            message = str(error)
            assert message and "\n" not in message.strip(), "not one line"
            return
        assert isinstance(values, dict) and set(values) <= set(keys)

    return check


def setup_node_config() -> tuple[Check, list[bytes]]:
    seeds = [
        (CONFIGS / "node.yaml").read_bytes(),
        b"rendezvous: vps.example.org:7000\nkeepalive: 25\n",
        b"expose:\n  - port: 22\n    as: ssh-home\nconnect:\n  - name: db\n    listen: 5432\n",
        b"allow: [a, b]\ncongestion: cubic\n",
    ]
    return _config(NODE_KEYS, "node.yaml"), seeds


def setup_rendezvous_config() -> tuple[Check, list[bytes]]:
    seeds = [
        (CONFIGS / "rendezvous.yaml").read_bytes(),
        b"listen: 0.0.0.0:7000\nrelay: false\nrelay_rate: 1000\n",
    ]
    return _config(RENDEZVOUS_KEYS, "rendezvous.yaml"), seeds


TARGETS = (
    Target("join-code", setup_join_code, max_size=200),
    Target("config-node", setup_node_config, max_size=4096),
    Target("config-rendezvous", setup_rendezvous_config, max_size=4096),
)
