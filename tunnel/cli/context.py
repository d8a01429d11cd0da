"""What every subcommand gets: its state directory, merged config and the node's keys."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunnel.cli.config import Key, load_file, resolve
from tunnel.errors import UserError
from tunnel.keys.identity import Identity, load_identity, load_network_secret

NOT_JOINED = "not joined to a network; run `ptunnel init` (new network) or `ptunnel join CODE`"


@dataclass
class Context:
    home: Path
    keys: Mapping[str, Key]
    config_path: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, keys: Mapping[str, Key], default_config: str
    ) -> Context:
        home = cls.home_of(args)
        path: Path | None = None
        if getattr(args, "config", None):
            path = Path(args.config).expanduser()
            if not path.exists():
                raise UserError(f"config file {path} does not exist; check the path given to -c")
        elif (home / default_config).exists():
            path = home / default_config
        file_values = load_file(path, keys) if path is not None else {}
        flags = {name: getattr(args, name, None) for name in keys}
        return cls(home=home, keys=keys, config_path=path, config=resolve(keys, file_values, flags))

    @classmethod
    def without_config(cls, args: argparse.Namespace) -> Context:
        """For a command that reads no config file itself (`-c` means something else there)."""
        return cls(home=cls.home_of(args), keys={})

    @staticmethod
    def home_of(args: argparse.Namespace) -> Path:
        from tunnel.keys.identity import default_home

        return Path(args.home).expanduser() if getattr(args, "home", None) else default_home()

    def identity(self) -> Identity:
        identity = load_identity(self.home)
        if identity is None:
            raise UserError(f"no node key in {self.home}; {NOT_JOINED}")
        return identity

    def network_secret(self) -> bytes:
        secret = load_network_secret(self.home)
        if secret is None:
            raise UserError(NOT_JOINED)
        return secret

    def rendezvous_addr(self) -> tuple[str, int]:
        """The first rendezvous server (`rendezvous_addrs`)."""
        return self.rendezvous_addrs()[0]

    def rendezvous_addrs(self) -> list[tuple[str, int]]:
        """The configured rendezvous servers (one, or several of one deployment, tried in
        turn), else the ones the join code named; first one first."""
        from tunnel.addresses import parse_endpoint
        from tunnel.keys.pins import joined_rendezvous

        given = self.config.get("rendezvous")
        if given is None:
            joined = joined_rendezvous(self.home)
            if not joined:
                self.network_secret()  # not joined at all: say that first, `join` names a server
                raise UserError(
                    "no rendezvous server given; pass --rendezvous HOST:PORT, set "
                    "PTUNNEL_RENDEZVOUS, put `rendezvous: HOST:PORT` in node.yaml, or join with "
                    "a ptn2 code (it names the rendezvous)"
                )
            try:
                given = [parse_endpoint(text) for text in joined]
            except ValueError as exc:
                raise UserError(f"{self.home / 'joined_rendezvous'}: {exc}; join again or "
                                "pass --rendezvous HOST:PORT") from None
        servers = given if isinstance(given, list) else [given]
        return [(str(host), int(port)) for host, port in servers]

    def rendezvous_key(self, addr: tuple[str, int]) -> bytes | None:
        """The rendezvous' key: configured (`rendezvous_key`), else pinned for `addr`, else
        None (the node then pins the key the server shows on first contact)."""
        from tunnel.addresses import format_endpoint
        from tunnel.keys.pins import ServerPins

        configured = self.config.get("rendezvous_key")
        if configured is not None:
            return bytes(configured)
        return ServerPins(self.home).get(format_endpoint(addr))

    def out(self, text: str) -> None:
        """A command's result on stdout (logs go to stderr)."""
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def out_json(self, value: object) -> None:
        self.out(json.dumps(value, indent=2, sort_keys=True))
