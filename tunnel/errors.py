"""Errors that reach the user as one line: what is wrong, and what to do about it."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix. The CLI prints its message on one line and exits non-zero."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line only: a multi-line message would read like a traceback.
        super().__init__(" ".join(message.split("\n")))

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(UserError):
    """A config file is malformed; the message names the file, the line and what was expected."""
