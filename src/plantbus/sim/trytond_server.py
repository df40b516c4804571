"""Start and stop a real `trytond` server on 127.0.0.1 for the demo and the tests."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("plantbus.sim.tryton")

ADMIN_LOGIN = "admin"
# The admin password of the throwaway demo and test databases, which serve
# 127.0.0.1 only.
ADMIN_PASSWORD = "admin"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(work_dir: Path, database_dir: Path, port: int) -> Path:
    """Write a trytond configuration file for SQLite databases in `database_dir`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "trytond.conf"
    config.write_text(
        "[database]\n"
        "uri = sqlite://\n"
        f"path = {database_dir}\n"
        # Retries of a write transaction that met a locked SQLite file.
        "retry = 10\n"
        "[web]\n"
        f"listen = 127.0.0.1:{port}\n"
        "[session]\n"
        # Seconds without a call before a session expires; the client logs in again.
        "timeout = 3600\n"
        # The demo and the tests log in many times from one address.
        "max_attempt = 1000\n",
        encoding="utf-8",
    )
    return config


def trytond_executable(name: str) -> str:
    """Return the path of a trytond script installed next to this Python."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


@dataclass
class TrytondServer:
    """A `trytond` subprocess that serves one SQLite database on 127.0.0.1."""

    database_path: Path
    work_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def database(self) -> str:
        """Return the database name: the SQLite file name without `.sqlite`."""
        return self.database_path.stem

    @property
    def url(self) -> str:
        """Return the server's base URL (without the database)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_url(self) -> str:
        """Return the JSON-RPC endpoint of the database."""
        return f"{self.url}/{self.database}/rpc/"

    @property
    def log_path(self) -> Path:
        """Return the file that receives the server's output."""
        return self.work_dir / "trytond.log"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until the database responds to a login."""
        if self.process is not None:
            return
        if self.database_path.suffix != ".sqlite" or not self.database_path.exists():
            raise FileNotFoundError(
                f"Tryton database file {str(self.database_path)!r} does not exist "
                "or does not end in '.sqlite'; build it with "
                "plantbus.sim.erp_setup.create_database first."
            )
        self.port = self.port or free_port()
        config = write_config(self.work_dir, self.database_path.parent, self.port)
        log = self.log_path.open("ab")
        started = time.monotonic()
        # -d preloads the database so that the first RPC call finds its pool.
        self.process = subprocess.Popen(
            [trytond_executable("trytond"), "-c", str(config), "-d", self.database],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TRYTOND_LOGGING_LEVEL": str(logging.WARNING)},
        )
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "trytond serves %s at %s (pid %s, ready in %.1f s)",
            self.database,
            self.rpc_url,
            self.process.pid,
            time.monotonic() - started,
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        body = json.dumps(
            {
                "id": 0,
                "method": "common.db.login",
                "params": [ADMIN_LOGIN, {"password": ADMIN_PASSWORD}],
            }
        ).encode()
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"trytond exited with code {self.process.returncode} before "
                    f"it responded; read {self.log_path} for the cause."
                )
            request = urllib.request.Request(
                self.rpc_url,
                data=body,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if json.loads(response.read()).get("result"):
                        return
            except urllib.error.HTTPError:
                # The database responded but rejected the demo password, so the
                # server is up and the caller's own login reports the cause.
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise TimeoutError(
            f"trytond did not respond at {self.rpc_url} within {timeout} s "
            f"(last error: {last_error}); read {self.log_path} for the cause."
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: terminate, then kill if it does not exit in time."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        logger.info("trytond for %s stopped", self.database)

    def __enter__(self) -> TrytondServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
