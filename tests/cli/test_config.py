"""Config files: mistakes name the file and line; precedence is flag > env > file > default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tunnel.addresses import parse_endpoint
from tunnel.cli.config import NODE_KEYS, RENDEZVOUS_KEYS, load_file, resolve
from tunnel.cli.main import main
from tunnel.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "tunnel" / "data"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("keepalive: 25\nbogus: 1\n", 2, "unknown key 'bogus'"),
        ("keepalive: soon\n", 1, "expected a number"),
        ("direct_only: 3\n", 1, "expected true or false"),
        ("congestion: vegas\n", 1, "one of bbr, cubic, newreno"),
        ("rendezvous: nowhere\n", 1, "expected HOST:PORT"),
        ("allow:\n  - notakey\n", 2, "not a base64 public key"),
        ("expose:\n  - port: 22\n    as: ssh\n  - port: 80\n    bogus: x\n", 5, "unknown key"),
        ("expose:\n  - port: 22\n", 2, "lacks required key 'as'"),
        ("connect:\n  - name: a\n    listen: 99999\n", 3, "expected [HOST:]PORT"),
        ("keepalive: [1\n", 1, "'[' list opened on this line is not closed"),
        ("- just a list\n", 1, "mapping"),
        ("keepalive: 1\nkeepalive: 2\n", 2, "appears twice"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_file(path, NODE_KEYS)
    message = caught.value.message
    assert message.startswith(f"{path}:{line}:"), message
    assert fragment in message
    assert "\n" not in message


def test_valid_file_is_parsed(tmp_path: Path) -> None:
    values = load_file(
        write(tmp_path, "keepalive: 10\nexpose:\n  - port: 10.0.0.5:80\n    as: web\n"), NODE_KEYS
    )
    assert values["keepalive"] == 10.0
    assert values["expose"] == [{"port": ("10.0.0.5", 80), "as": "web"}]


def test_precedence_flag_env_file_default() -> None:
    file_values = {"rendezvous": ("192.0.2.1", 1), "keepalive": 5.0}
    env = {"PTUNNEL_RENDEZVOUS": "192.0.2.2:2"}
    merged = resolve(NODE_KEYS, file_values, {}, env)
    assert merged["rendezvous"] == [("192.0.2.2", 2)]  # env beats file
    assert merged["keepalive"] == 5.0  # file beats default
    assert merged["congestion"] == "bbr"  # default
    merged = resolve(NODE_KEYS, file_values, {"rendezvous": ("192.0.2.3", 3)}, env)
    assert merged["rendezvous"] == ("192.0.2.3", 3)  # flag beats env
    assert resolve(NODE_KEYS, file_values, {}, {})["rendezvous"] == ("192.0.2.1", 1)


def test_several_rendezvous_servers_from_the_file_or_the_environment(tmp_path: Path) -> None:
    servers = [("192.0.2.1", 7000), ("192.0.2.2", 7000)]
    for text in ("rendezvous: 192.0.2.1:7000,192.0.2.2:7000\n",
                 "rendezvous:\n  - 192.0.2.1:7000\n  - 192.0.2.2:7000\n"):
        assert load_file(write(tmp_path, text), NODE_KEYS)["rendezvous"] == servers
    env = {"PTUNNEL_RENDEZVOUS": "192.0.2.1:7000, 192.0.2.2:7000"}
    assert resolve(NODE_KEYS, {}, {}, env)["rendezvous"] == servers
    for bad in ("rendezvous: 192.0.2.1:7000,\n", "rendezvous:\n  - 192.0.2.1:7000\n  - 3\n",
                "rendezvous: []\n"):
        with pytest.raises(ConfigError, match="expected HOST:PORT"):
            load_file(write(tmp_path, bad), NODE_KEYS)
    with pytest.raises(ConfigError, match=r"PTUNNEL_RENDEZVOUS.*empty entry"):
        resolve(NODE_KEYS, {}, {}, {"PTUNNEL_RENDEZVOUS": "192.0.2.1:7000,,"})


def test_bad_environment_value_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="PTUNNEL_RENDEZVOUS"):
        resolve(NODE_KEYS, {}, {}, {"PTUNNEL_RENDEZVOUS": "nope"})


@pytest.mark.parametrize(("name", "keys"), [("node.yaml", NODE_KEYS),
                                            ("rendezvous.yaml", RENDEZVOUS_KEYS)])
def test_examples_load_and_document_every_key(name: str, keys: dict[str, object]) -> None:
    path = CONFIGS / name
    values = load_file(path, keys)  # type: ignore[arg-type]
    text = path.read_text()
    for key in keys:
        # A key may be shown commented out, as `# store: ...`: documented, but off by default.
        assert re.search(rf"^(# )?{key}:", text, re.MULTILINE), f"{name} does not document {key}"
        assert (key in values) == bool(re.search(rf"^{key}:", text, re.MULTILINE))


def test_endpoint_parsing() -> None:
    assert parse_endpoint("[::1]:7000") == ("::1", 7000)
    assert parse_endpoint("2222", default_host="127.0.0.1") == ("127.0.0.1", 2222)
    with pytest.raises(ValueError):
        parse_endpoint("host:0")


def test_cli_reports_config_error_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "keepalive: 1\nbogus: 2\n")
    code = main(["id", "--home", str(tmp_path / "h"), "-c", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}:2: unknown key 'bogus'" in err and err.count("\n") == 1
    code = main(["id", "--home", str(tmp_path / "h"), "-c", str(tmp_path / "missing.yaml")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
