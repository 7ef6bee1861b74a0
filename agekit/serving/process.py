"""Run ``agekit serve`` as a child process on a free loopback port and wait until it answers.

For the test suite and the load benchmark, which must talk to the real server (the real CLI, the real
uvicorn, real sockets) and must always stop it again. Standard library only.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

__all__ = ["ServerProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(["--workers", "1"]) as srv: srv.url`` — ``agekit serve`` on 127.0.0.1, stopped on exit.

    ``log`` is a file that receives the server's stdout and stderr (read it when something fails).
    """

    def __init__(self, args: list[str] | None = None, host: str = "127.0.0.1", port: int | None = None,
                 startup_timeout: float = 180.0, log: str | Path | None = None, env: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.args = list(args or [])
        self.startup_timeout = startup_timeout
        self.log_path = Path(log) if log is not None else None
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "ServerProcess":
        cmd = [sys.executable, "-m", "agekit.cli.main", "serve", "--host", self.host, "--port", str(self.port),
               "--log-level", "warning", *self.args]
        self._log = open(self.log_path, "wb") if self.log_path is not None else None
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(cmd, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agekit serve exited with code {self.proc.returncode} before answering: {self.tail()}")
            try:
                if self.get_json("/health", timeout=2).get("status") == "ok":
                    return self
            except (OSError, ValueError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"agekit serve did not answer within {self.startup_timeout:g} s: {self.tail()}")

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:  # noqa: S310 - our own loopback server
            return json.loads(r.read())

    def tail(self, n: int = 2000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (uvicorn's graceful stop), then kill if it does not go."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
