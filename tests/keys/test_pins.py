"""known_nodes pin store: first use records, same key passes, changed key is refused with both
fingerprints unless accepted; the file survives edits and junk."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tunnel.errors import UserError
from tunnel.keys.netkeys import encode_key, fingerprint
from tunnel.keys.pins import KNOWN_NODES_FILE, PinMismatch, PinResult, PinStore

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(1, 33))


def test_first_use_pins_then_matches(tmp_path: Path) -> None:
    store = PinStore(tmp_path)
    assert store.get("ssh-home") is None
    assert store.check("ssh-home", KEY_1) is PinResult.NEW
    assert store.check("ssh-home", KEY_1) is PinResult.MATCH
    assert PinStore(tmp_path).get("ssh-home") == KEY_1  # persisted
    path = tmp_path / KNOWN_NODES_FILE
    # name, key and when it was first seen, in UTC
    assert re.fullmatch(f"ssh-home {re.escape(encode_key(KEY_1))} "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\dZ\n", path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_changed_key_is_refused_naming_both_fingerprints(tmp_path: Path) -> None:
    store = PinStore(tmp_path)
    store.check("ssh-home", KEY_1)
    with pytest.raises(PinMismatch) as info:
        store.check("ssh-home", KEY_2)
    message = str(info.value)
    assert fingerprint(KEY_1) in message and fingerprint(KEY_2) in message
    assert "--accept-new-key" in message and "\n" not in message
    assert isinstance(info.value, UserError)
    assert store.get("ssh-home") == KEY_1  # nothing changed


def test_accept_new_key_replaces_the_pin(tmp_path: Path) -> None:
    store = PinStore(tmp_path)
    store.check("ssh-home", KEY_1)
    store.check("other", KEY_1)
    assert store.check("ssh-home", KEY_2, accept_new_key=True) is PinResult.REPLACED
    assert store.entries() == {"ssh-home": KEY_2, "other": KEY_1}
    assert store.check("ssh-home", KEY_2) is PinResult.MATCH


def test_comments_and_junk_lines_are_kept(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_NODES_FILE
    path.write_text(f"# my nodes\n\nthis line is junk\nweb {encode_key(KEY_2)}\nbad notbase64!\n")
    store = PinStore(tmp_path)
    assert store.entries() == {"web": KEY_2}
    store.check("ssh-home", KEY_1)
    store.remove("web")
    text = path.read_text()
    assert text.startswith("# my nodes\n\nthis line is junk\n")
    assert "bad notbase64!" in text and "web " not in text
    assert text.splitlines()[-1].startswith(f"ssh-home {encode_key(KEY_1)} ")


def test_remove(tmp_path: Path) -> None:
    store = PinStore(tmp_path)
    assert not store.remove("nobody")
    store.check("a", KEY_1)
    assert store.remove("a") and store.get("a") is None
    assert store.check("a", KEY_2) is PinResult.NEW


@pytest.mark.parametrize("name", ["", "two words", "#hash", "tab\there"])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError):
        PinStore(tmp_path).check(name, KEY_1)
    assert not (tmp_path / KNOWN_NODES_FILE).exists()


def test_missing_directory_is_created(tmp_path: Path) -> None:
    store = PinStore(tmp_path / "new" / "home")
    assert store.check("a", KEY_1) is PinResult.NEW
    assert store.get("a") == KEY_1


def test_a_file_problem_is_one_line(tmp_path: Path) -> None:
    (tmp_path / KNOWN_NODES_FILE).mkdir()
    with pytest.raises(UserError) as caught:
        PinStore(tmp_path).check("a", KEY_1)
    assert caught.value.message == (
        f"cannot read the pinned keys in {tmp_path / KNOWN_NODES_FILE}: it is a directory; "
        "fix its permissions, or move it out of the way (it holds the keys pinned so far)")


def test_bytes_that_are_not_utf8_survive_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_NODES_FILE
    path.write_bytes(b"# caf\xe9\n")
    assert PinStore(tmp_path).check("a", KEY_1) is PinResult.NEW
    assert path.read_bytes().startswith(f"# caf\xe9\na {encode_key(KEY_1)} ".encode("latin-1"))


def test_pins_lists_name_key_and_first_seen_old_lines_included(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_NODES_FILE
    path.write_text(f"old {encode_key(KEY_2)}\n")  # written before pins had a date
    store = PinStore(tmp_path)
    store.check("new", KEY_1)
    (old, new) = store.pins()
    assert old == ("old", KEY_2, "")
    assert new[:2] == ("new", KEY_1) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", new[2])
    assert store.check("old", KEY_2) is PinResult.MATCH  # both layouts still match
    assert store.check("new", KEY_1) is PinResult.MATCH
