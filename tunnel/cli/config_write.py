"""Set one top-level key of a YAML config file in place, keeping the rest of the file (its
comments, its order) as the user wrote it: `ptunnel init --rendezvous HOST:PORT` saves the
server in node.yaml this way.

The new text is checked as a whole before it replaces the old file (atomically), so a write
never leaves a file that `up` would refuse.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from tunnel.cli.config import Key, check_file
from tunnel.errors import ConfigError, path_error

NEW_FILE_HEADER = ("# ptunnel node configuration; `ptunnel config example node` documents every "
                   "key.\n")


def yaml_scalar(key: str, text: str) -> str:
    """`text` as YAML reads it back unchanged: plain where it can be (192.0.2.10:7000), else
    double-quoted ("[::1]:7000", which would be a list plain)."""
    try:
        if yaml.safe_load(f"{key}: {text}") == {key: text}:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def set_key(path: Path, key: str, text: str, keys: Mapping[str, Key]) -> None:
    """Make `key: text` a top-level line of the file at `path`, creating the file if needed."""
    line = f"{key}: {yaml_scalar(key, text)}"
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} to set '{key}': {exc}; fix or move the file"
                          ) from None
    if old is None:
        new = NEW_FILE_HEADER + line + "\n"
    else:
        pattern = re.compile(rf"^{re.escape(key)}[ \t]*:.*$", re.MULTILINE)
        if pattern.search(old):
            new = pattern.sub(lambda _: line, old, count=1)
        else:
            new = old + ("" if old.endswith("\n") or not old else "\n") + line + "\n"
    temporary = path.with_name(f".{path.name}.new")
    try:
        temporary.write_text(new, encoding="utf-8")
        if old is None:
            temporary.chmod(0o600)
        else:
            temporary.chmod(path.stat().st_mode & 0o777)
        _, problems = check_file(temporary, keys)
        if problems:
            raise ConfigError(f"cannot set '{key}' in {path}: "
                              f"{problems[0].replace(str(temporary), str(path))}; "
                              f"fix the file first (`ptunnel config check -c {path}`)")
        os.replace(temporary, path)
    except OSError as exc:
        raise path_error(exc, f"write {path}", "check that path and its permissions") from None
    finally:
        temporary.unlink(missing_ok=True)
