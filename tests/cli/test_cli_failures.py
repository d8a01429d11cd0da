"""No traceback reaches a user: path problems, YAML syntax errors and unexpected exceptions are
each one line on stderr saying what is wrong and what to do."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import ENV, init, ptunnel, silent_rendezvous
from tunnel.cli.logs import TextFormatter

HOME_FIX = "set PTUNNEL_HOME (or --home) to a directory of your own"


def one_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_home_under_a_file(tmp_path: Path) -> None:
    """The issue's `PTUNNEL_HOME=/etc/passwd/x ptunnel init`."""
    (tmp_path / "file").write_text("x")
    done = ptunnel("init", env={"PTUNNEL_HOME": str(tmp_path / "file" / "x")})
    assert one_error(done) == (
        f"ptunnel init: error: cannot use the state directory {tmp_path}/file/x: "
        f"{tmp_path}/file is a file, not a directory; {HOME_FIX}")


def test_home_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert one_error(ptunnel("id", "--home", str(tmp_path / "file"))) == (
        f"ptunnel id: error: {tmp_path}/file is a file, not a directory; {HOME_FIX}")


def test_key_file_that_is_a_directory(tmp_path: Path) -> None:
    home = init(tmp_path / "a")
    (home / "node.key").unlink()
    (home / "node.key").mkdir()
    line = one_error(ptunnel("id", "--home", str(home)))
    assert f"{home}/node.key is not a regular file; move it out of the way" in line


def test_control_socket_path_too_long(tmp_path: Path) -> None:
    home = init(tmp_path / ("h" * 100))
    with silent_rendezvous() as server:
        done = ptunnel("connect", "web", "-L", "2222", "--home", str(home),
                       "--rendezvous", server.address)
        assert server.received_nothing()
    line = one_error(done)
    assert "cannot create the control socket" in line
    assert "use a shorter PTUNNEL_HOME (or --home)" in line


def test_rendezvous_database_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = ptunnel("rendezvous", "--listen", "127.0.0.1:9", "--db",
                   str(tmp_path / "file" / "r.db"), "--home", str(tmp_path / "r"))
    assert one_error(done) == (
        f"ptunnel rendezvous: error: cannot create the directory of the database "
        f"{tmp_path}/file/r.db: a file of that name is in the way; pass another --db")


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    done = ptunnel("up", "-c", str(tmp_path / "conf"), "--home", str(init(tmp_path / "a")))
    assert one_error(done) == (
        f"ptunnel up: error: cannot read the config file {tmp_path}/conf: it is a directory; "
        "check the path (-c FILE) and its permissions")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        # the case: `as:` indented one space less than `port:`
        ("rendezvous: 127.0.0.1:9\nexpose:\n  - port: 22\n   as: x\n", 4,
         "this line's indentation does not match the lines above it; indent each level by the "
         "same number of spaces"),
        ("rendezvous: 127.0.0.1:9\nexpose:\n  - port: 22\n     as: x\n", 4,
         "a 'key:' where none can be: check the indentation of this line and the ':' of the "
         "line above; quote a value that contains ': '"),
        ("rendezvous: 127.0.0.1:9\n\tkeepalive: 5\n", 2, "a tab; indent with spaces only"),
        ("rendezvous: '127.0.0.1:9\nkeepalive: 5\n", 1,
         "a quote opened on this line is never closed"),
        ("keepalive: 5\nrendezvous: \xff\n", 2,
         "this line is not UTF-8 text; save the file as UTF-8"),
    ],
    ids=["dedented", "indented", "tab", "quote", "latin-1"],
)
def test_yaml_syntax_errors_in_plain_words(tmp_path: Path, text: str, line: int,
                                           words: str) -> None:
    config = tmp_path / "node.yaml"
    config.write_bytes(text.encode("latin-1"))
    done = ptunnel("up", "-c", str(config), "--home", str(init(tmp_path / "a")))
    assert one_error(done) == f"ptunnel up: error: {config}:{line}: {words}"


SABOTAGED = """\
import sys
import tunnel.cli.commands.id as command

def run(args, ctx):
    raise RuntimeError("the unexpected\\nacross two lines.")

command.run = run
from tunnel.cli.main import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_an_unexpected_exception_is_one_line(tmp_path: Path) -> None:
    home = str(init(tmp_path / "a"))
    done = subprocess.run([sys.executable, "-c", SABOTAGED, "id", "--home", home],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert one_error(done, code=1) == (
        "ptunnel id: error: unexpected RuntimeError: the unexpected across two lines; "
        "run with -v for details")
    verbose = subprocess.run([sys.executable, "-c", SABOTAGED, "id", "-v", "--home", home],
                             capture_output=True, text=True, env=ENV, timeout=60)
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr  # in the debug log
    assert verbose.stderr.splitlines()[-1] == (
        "ptunnel id: error: unexpected RuntimeError: the unexpected across two lines")


def test_a_logged_traceback_shows_only_with_verbose() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                                   "Exception in callback %s\nhandle: %s", ("f()", "<h>"),
                                   sys.exc_info())
    short = TextFormatter(details=False).format(record)
    assert "\n" not in short
    assert short.endswith("asyncio: Exception in callback f() handle: <h>: ValueError: bad "
                          "value (run with -v for details)")
    assert "Traceback" in TextFormatter(details=True).format(record)


def test_up_with_more_names_than_a_node_can_hold_is_refused_up_front(tmp_path: Path) -> None:
    home = init(tmp_path / "a")
    entries = "".join(f"  - port: {9000 + i}\n    as: svc-{i}\n" for i in range(9))
    (home / "node.yaml").write_text(f"rendezvous: 127.0.0.1:9\nexpose:\n{entries}")
    line = one_error(ptunnel("up", "--home", str(home)))
    assert "exposes 9 names; a node can hold at most 8" in line, line
