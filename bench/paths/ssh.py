"""`ssh -L` through a throwaway sshd on 127.0.0.1 with throwaway keys (aes128-gcm).

The sshd gets its own config, host key and authorized_keys in a temporary directory, so nothing
of the machine's ssh set-up is read or changed. OpenSSH's privilege-separation directory
(/run/sshd) is created if missing, as the openssh-server package does at boot.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from pathlib import Path

from bench.paths.base import (
    LOOPBACK,
    READY_TIMEOUT_S,
    ChildrenMixin,
    Placement,
    Target,
    cold_start_of,
    free_port,
    in_ns,
    need_tool,
)
from bench.procs import Child, Unavailable, run_ok

CIPHER = "aes128-gcm@openssh.com"  # the fast AES-NI cipher; the numbers use it
SSHD = "/usr/sbin/sshd"


class Ssh(ChildrenMixin):
    name = "ssh -L"
    description = f"OpenSSH local forward, {CIPHER}, throwaway sshd"

    def __init__(self, placement: Placement = LOOPBACK) -> None:
        super().__init__()
        self.placement = placement
        self._dir: Path | None = None
        self._target: Target | None = None
        self._sshd_port = 0

    def start(self, target: Target) -> int:
        if not os.access(SSHD, os.X_OK):
            raise Unavailable("openssh-server (sshd) is not installed")
        keygen = need_tool("ssh-keygen")
        need_tool("ssh")
        self._target = target
        self._dir = Path(tempfile.mkdtemp(prefix="ptunnel-bench-ssh-"))
        d = self._dir
        for key in ("host", "user"):
            run_ok([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)])
        shutil.copy(d / "user.pub", d / "authorized_keys")
        self._sshd_port = free_port()
        (d / "sshd_config").write_text("\n".join([
            f"Port {self._sshd_port}",
            f"ListenAddress {self.placement.server_host}",
            f"HostKey {d / 'host'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes",
            f"Ciphers {CIPHER}",
            "PidFile none",
            "LogLevel ERROR",
            "",
        ]))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sshd = self.spawn("sshd", Child("sshd", in_ns(
            self.placement.server_ns, [SSHD, "-D", "-e", "-f", str(d / "sshd_config")])))
        sshd.wait_listening(self._sshd_port, READY_TIMEOUT_S)
        port = free_port()
        client = self.spawn("ssh", Child("ssh", self._client_argv(port)))
        client.wait_listening(port, READY_TIMEOUT_S)
        return port

    def _client_argv(self, port: int) -> list[str]:
        assert self._dir is not None and self._target is not None
        return in_ns(self.placement.client_ns, [
            "ssh", "-N", "-F", "/dev/null", "-i", str(self._dir / "user"),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes",
            "-o", "LogLevel=ERROR", "-c", CIPHER, "-p", str(self._sshd_port),
            "-L", f"127.0.0.1:{port}:{self._target.host}:{self._target.port}",
            f"{getpass.getuser()}@{self.placement.server_host}",
        ])

    def cold_start(self, timeout: float) -> float | None:
        """A fresh `ssh -L` (key exchange, auth, forward) to the first byte through it."""
        return cold_start_of("ssh (cold)", self._client_argv, timeout)

    def stop(self) -> None:
        super().stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
