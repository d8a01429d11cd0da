"""Errors that reach the user as one line: what is wrong, and what to do about it."""

from __future__ import annotations

import errno

# An OSError's reason in the words of a sentence ("cannot write X: permission denied; ...").
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory",
    errno.EEXIST: "a file of that name is in the way",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ELOOP: "too many symbolic links",
}


class UserError(Exception):
    """A problem the user can fix. The CLI prints its message on one line and exits non-zero."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line only: a multi-line message would read like a traceback.
        super().__init__(" ".join(message.split("\n")))

    @property
    def message(self) -> str:
        return str(self.args[0])


class RuntimeFailure(UserError):
    """The command ran and failed on something outside its command line and files: the
    rendezvous does not answer, no node has that name, a local port is taken. Running it again
    later may work, so the CLI exits with 1, not the 2 of a mistake to fix first."""

    exit_code = 1


class ConfigError(UserError):
    """A config file is malformed; the message names the file, the line and what was expected."""


def os_reason(exc: OSError) -> str:
    """Why a file operation failed, in plain words (no errno number, no repeated path)."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def path_error(exc: OSError, doing: str, fix: str) -> UserError:
    """One line for a failed file operation: `cannot <doing>: <reason>; <fix>`."""
    return UserError(f"cannot {doing}: {os_reason(exc)}; {fix}")
