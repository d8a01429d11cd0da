"""YAML config files with documented keys, validated with the file and line of every mistake.

Precedence, highest first: command-line flag > environment variable > config file > default.
`tunnel/data/node.yaml` and `tunnel/data/rendezvous.yaml` (shipped in the package, printed by
`ptunnel config example`) are the commented references for the keys below;
`tests/cli/test_config.py` checks that every key documented here appears there.

A file is checked whole: `check_file` returns every mistake with its line (`ptunnel config
check`), `load_file` raises the first one, saying how many more there are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rendezvous.protocol import MAX_NAMES, NAME_RULE, normalize_name
from tunnel.addresses import Addr, format_endpoint, parse_endpoint, parse_endpoints
from tunnel.errors import ConfigError, os_reason


@dataclass(frozen=True, slots=True)
class Key:
    """One documented config key: its kind, default, environment variable and meaning."""

    # str | name | int | port_number | float | bool | endpoint | port | key | keys | list | choice
    kind: str
    default: Any = None
    doc: str = ""
    env: str | None = None
    choices: tuple[str, ...] = ()
    items: Mapping[str, Key] = field(default_factory=dict)  # for kind == "list" of mappings
    required: bool = False
    unique: bool = False  # an item key no two entries of its list may share
    max_items: int | None = None  # for kind == "list"
    too_many: str = ""  # completes "this file ..."; {n}: the entries found, {max}: max_items


NODE_KEYS: dict[str, Key] = {
    "rendezvous": Key("endpoints", None, "rendezvous server HOST:PORT, or several of one "
                      "deployment (HOST:PORT,HOST:PORT or a list), tried in turn",
                      env="PTUNNEL_RENDEZVOUS"),
    "rendezvous_key": Key("key", None, "the rendezvous server's public key (base64)",
                          env="PTUNNEL_RENDEZVOUS_KEY"),
    "log_level": Key("choice", "info", "log level", env="PTUNNEL_LOG_LEVEL",
                     choices=("debug", "info", "warning", "error")),
    "log_format": Key("choice", "text", "log line format", choices=("text", "json")),
    "keepalive": Key("float", 25.0, "persistent keepalive interval in seconds (0 = off)"),
    "direct_only": Key("bool", False, "never use the relay; fail if no direct path opens"),
    "congestion": Key("choice", "bbr", "congestion controller",
                      choices=("bbr", "cubic", "newreno")),
    "allow": Key("keys", [], "public keys allowed to connect (empty = every network member)"),
    "expose": Key("list", [], "services this node exposes", max_items=MAX_NAMES, too_many=(
        "exposes {n} names; a node can hold at most {max}: split them over several configs, "
        "each with its own PTUNNEL_HOME"), items={
        "port": Key("port", None, "[HOST:]PORT of the local service", required=True),
        "as": Key("name", None, "name to register at the rendezvous", required=True,
                  unique=True),
        "udp": Key("bool", False, "forward UDP instead of TCP"),
        "allow": Key("keys", [], "public keys allowed for this service"),
    }),
    "connect": Key("list", [], "remote services to reach through local ports", items={
        "name": Key("name", None, "name the peer exposes", required=True),
        "listen": Key("port", None, "[BIND:]PORT to listen on locally", required=True,
                      unique=True),
        "udp": Key("bool", False, "forward UDP instead of TCP"),
        "accept_new_key": Key("bool", False, "accept a changed key for this name once"),
    }),
}

RENDEZVOUS_KEYS: dict[str, Key] = {
    "listen": Key("endpoint", "0.0.0.0:7000", "UDP HOST:PORT the server listens on",
                  env="PTUNNEL_RENDEZVOUS_LISTEN"),
    "netcheck_port": Key("port_number", None,
                         "second UDP port for NAT mapping checks (default PORT+1)"),
    "db": Key("str", None, "SQLite database path (default $PTUNNEL_HOME/rendezvous.db)"),
    "store": Key("str", None, "redis://HOST:PORT/DB: keep the state in Redis instead of db"),
    "server_id": Key("str", None, "this server's name among those on one Redis "
                     "(default HOSTNAME:PORT)"),
    "relay": Key("bool", True, "relay traffic between members that cannot punch"),
    "relay_rate": Key("int", 12_500_000, "relay budget per node in bytes per second"),
    "relay_network_rate": Key("int", 25_000_000, "relay budget per network in bytes per second"),
    "relay_total_rate": Key("int", 125_000_000, "relay budget of the server in bytes per second"),
    "networks": Key("str", None, "file of the network ids served, one a line (default: all)"),
    "max_members": Key("int", 256, "nodes one network may register at once (1-510)"),
    "log_level": Key("choice", "info", "log level", choices=("debug", "info", "warning", "error")),
    "log_format": Key("choice", "text", "log line format", choices=("text", "json")),
}


class _Problems:
    """Every mistake found in one file, each as `file:line: what is wrong; what to do`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: list[str] = []

    def at(self, node: yaml.Node, text: str) -> _Invalid:
        self.found.append(f"{self.path}:{node.start_mark.line + 1}: {text}")
        return INVALID


def _public_key(text: str) -> bytes:
    from tunnel.keys.netkeys import decode_key

    return decode_key(text)


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


class _Invalid:
    """A value that was wrong (and reported): its key is left out of the result."""


INVALID = _Invalid()


def _endpoints(value: Any) -> list[Addr] | None:
    """`HOST:PORT`, `HOST:PORT,HOST:PORT`, or a list of such strings: the servers, in order.
    None (or ValueError) for anything else."""
    if isinstance(value, str):
        return parse_endpoints(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        out: list[Addr] = []
        for text in value:
            out += [a for a in parse_endpoints(text) if a not in out]
        return out
    return None


def _scalar(problems: _Problems, node: yaml.Node, name: str, spec: Key) -> Any:
    if spec.kind == "endpoints" and isinstance(node, yaml.SequenceNode):
        pass  # a list of servers: checked as a whole below
    elif not isinstance(node, yaml.ScalarNode):
        return problems.at(node, f"'{name}' must be a single value ({spec.doc})")
    try:
        value = yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError:  # a tag such as `!!python/name:` that safe_load refuses
        return problems.at(node, f"'{name}' has the tag {node.tag}, which a config file cannot "
                                 "use; remove the '!' part")
    checks: dict[str, Callable[[Any], Any]] = {
        "str": lambda v: v if isinstance(v, str) else None,
        "name": lambda v: normalize_name(str(v))
        if isinstance(v, str | int) and not isinstance(v, bool) else None,
        "int": lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
        "port_number": lambda v: v if isinstance(v, int) and not isinstance(v, bool)
        and 0 < v < 65536 else None,
        "float": lambda v: float(v) if isinstance(v, int | float) and not isinstance(v, bool)
        else None,
        "bool": lambda v: v if isinstance(v, bool) else None,
        "choice": lambda v: v if v in spec.choices else None,
        "endpoint": lambda v: parse_endpoint(v) if isinstance(v, str) else None,
        "endpoints": _endpoints,
        "port": lambda v: parse_endpoint(str(v), default_host="127.0.0.1"),
        "key": lambda v: _public_key(v) if isinstance(v, str) else None,
    }
    expected = {
        "str": "a string", "name": f"a name: {NAME_RULE}",
        "int": "a whole number", "port_number": "a port number (1-65535)", "float": "a number",
        "bool": "true or false", "choice": "one of " + ", ".join(spec.choices),
        "endpoint": "HOST:PORT", "port": "[HOST:]PORT",
        "endpoints": "HOST:PORT, HOST:PORT,HOST:PORT, or a list of HOST:PORT",
        "key": "a base64 public key (as `ptunnel rendezvous --show-key` prints it)",
    }[spec.kind]
    try:
        result = checks[spec.kind](value)
    except ValueError:
        result = None
    if result is None:
        return problems.at(node, f"'{name}' is {value!r}; expected {expected}")
    return result


def _value(problems: _Problems, node: yaml.Node, name: str, spec: Key) -> Any:
    if spec.kind == "keys":
        from tunnel.keys.netkeys import decode_key

        if not isinstance(node, yaml.SequenceNode):
            return problems.at(node, f"'{name}' must be a list of public keys")
        keys = []
        for item in node.value:
            text = _scalar(problems, item, name, Key("str"))
            if text is INVALID:
                continue
            try:
                keys.append(decode_key(text))
            except ValueError as exc:
                problems.at(item, str(exc))
        return keys
    if spec.kind == "list":
        if not isinstance(node, yaml.SequenceNode):
            return problems.at(node, f"'{name}' must be a list of entries")
        if spec.max_items is not None and len(node.value) > spec.max_items:
            problems.at(node, "this file "
                        + spec.too_many.format(n=len(node.value), max=spec.max_items))
        entries = [(item, _mapping(problems, item, spec.items, f"{name} entry"))
                   for item in node.value]
        _check_unique(problems, name, spec, entries)
        return [entry for _, entry in entries if entry is not INVALID]
    return _scalar(problems, node, name, spec)


def _check_unique(problems: _Problems, name: str, spec: Key,
                  entries: list[tuple[yaml.Node, Any]]) -> None:
    """Two entries of a list that would collide at run time (one name exposed twice, two
    connects on one local port) are a mistake of the file, reported where the second is."""
    for key, item_spec in spec.items.items():
        if not item_spec.unique:
            continue
        first: dict[Any, int] = {}
        for node, entry in entries:
            if entry is INVALID or key not in entry:
                continue
            value = entry[key]
            if value in first:
                shown = format_endpoint(value) if isinstance(value, tuple) else value
                problems.at(node, f"'{key}: {shown}' is already in the {name} entry of line "
                                  f"{first[value]}; each {name} entry needs its own '{key}'")
            else:
                first[value] = node.start_mark.line + 1


def _mapping(problems: _Problems, node: yaml.Node, keys: Mapping[str, Key],
             what: str) -> dict[str, Any] | _Invalid:
    if not isinstance(node, yaml.MappingNode):
        return problems.at(node, f"{what} must be a mapping of keys to values")
    result: dict[str, Any] = {}
    seen: set[str] = set()
    for key_node, value_node in node.value:
        name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
        if name not in keys:
            problems.at(key_node, f"unknown key '{name}' in {what}; "
                                  f"expected one of: {', '.join(keys)}")
            continue
        if name in seen:
            problems.at(key_node, f"key '{name}' appears twice")
            continue
        seen.add(name)
        value = _value(problems, value_node, name, keys[name])
        if value is not INVALID:
            result[name] = value
    missing = [k for k, spec in keys.items() if spec.required and k not in seen]
    if missing:
        problems.at(node, f"{what} lacks required key '{missing[0]}'")
    return result


def check_file(path: Path, keys: Mapping[str, Key]) -> tuple[dict[str, Any], list[str]]:
    """Parse and validate one YAML file: its values, and every mistake found (`file:line: ...`).
    A YAML syntax error stops the parse, so it is the only mistake reported then."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {os_reason(exc)}; check the "
                          "path (-c FILE) and its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return {}, [f"{path}:{line}: this line is not UTF-8 text; save the file as UTF-8"]
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc, text)
        return {}, [f"{path}:{line}: {problem}"]
    if root is None:
        return {}, []
    problems = _Problems(path)
    values = _mapping(problems, root, keys, "the config file")
    return ({} if isinstance(values, _Invalid) else values), problems.found


def load_file(path: Path, keys: Mapping[str, Key]) -> dict[str, Any]:
    """Parse and validate one YAML file; the first mistake, naming the file and the line, is
    raised as a ConfigError that says how many more `ptunnel config check` would list."""
    values, problems = check_file(path, keys)
    if problems:
        more = len(problems) - 1
        kind = "rendezvous " if keys is RENDEZVOUS_KEYS else ""
        suffix = (f" (and {more} more problem{'s' if more > 1 else ''}: `ptunnel config check "
                  f"{kind}-c {path}` lists them all)") if more else ""
        raise ConfigError(problems[0] + suffix)
    return values


# What PyYAML reports, in the words of someone editing the file: (start of PyYAML's problem,
# plain words, whether the line to show is where the construct began rather than where
# PyYAML noticed). The first match wins; anything else keeps PyYAML's own words.
_YAML_PROBLEMS = (
    ("mapping values are not allowed", "a 'key:' where none can be: check the indentation of "
     "this line and the ':' of the line above; quote a value that contains ': '", False),
    ("expected <block end>", "this line's indentation does not match the lines above it; "
     "indent each level by the same number of spaces", False),
    ("did not find expected key", "this line's indentation does not match the lines above it; "
     "indent each level by the same number of spaces", False),
    ("did not find expected '-'", "this list item is indented differently from the items "
     "above it", False),
    ("found character '\\t'", "a tab; indent with spaces only", False),
    ("could not find expected ':'", "a key without ':' (write 'key: value')", True),
    ("found unexpected end of stream", "a quote opened on this line is never closed", True),
    ("expected ',' or ']'", "a '[' list opened on this line is not closed with ']'", True),
    ("expected ',' or '}'", "a '{' mapping opened on this line is not closed with '}'", True),
    ("found unknown escape character", "a '\\' escape YAML does not know in double quotes; "
     "use single quotes", False),
    ("found undefined alias", "a value starting with '*' (an alias); quote the value", False),
    ("but found another document", "a second document ('---'); a config file holds one",
     False),
    ("found character", "a value starting with a character YAML reserves (@, `, %); "
     "quote the value", False),
)


def yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int, str]:
    """(line, what is wrong in plain words) for a PyYAML syntax error in `text`."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return line, f"a control character (code {exc.character:#x}) YAML does not allow"
    problem = str(getattr(exc, "problem", None) or "")
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    for start, words, at_context in _YAML_PROBLEMS:
        if problem.startswith(start):
            mark = context_mark if at_context and context_mark is not None else problem_mark
            return (mark.line + 1 if mark is not None else 1), words
    line = problem_mark.line + 1 if problem_mark is not None else 1
    return line, f"not valid YAML ({problem or 'unreadable'})"


def resolve(
    keys: Mapping[str, Key],
    file_values: Mapping[str, Any],
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge: flag > environment > file > default. A flag of None means "not given"."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    for name, spec in keys.items():
        value = spec.default
        if name in file_values:
            value = file_values[name]
        if spec.env and environ.get(spec.env):
            text = environ[spec.env]
            try:
                value = (parse_endpoint(text) if spec.kind == "endpoint"
                         else parse_endpoints(text) if spec.kind == "endpoints"
                         else _public_key(text) if spec.kind == "key" else text)
            except ValueError as exc:
                raise ConfigError(f"environment variable {spec.env}: {exc}") from None
            if spec.kind == "choice" and value not in spec.choices:
                raise ConfigError(
                    f"environment variable {spec.env} is {text!r}; "
                    f"expected one of {', '.join(spec.choices)}"
                )
        if flags.get(name) is not None:
            value = flags[name]
        merged[name] = value
    return merged
