"""NATS servers for the JetStream tests: the machine's own and private clusters."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MACHINE_URL = "nats://127.0.0.1:4222"
_MACHINE_START = [
    "start-stop-daemon",
    "--start",
    "--oknodo",
    "--background",
    "--exec",
    "/usr/sbin/nats-server",
    "--",
    "-a",
    "127.0.0.1",
    "-p",
    "4222",
    "-js",
    "-sd",
    "/var/lib/nats-server",
    "-l",
    "/var/log/nats-server.log",
]


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether something accepts TCP connections on a port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, seconds: float) -> None:
    """Wait until a port accepts connections, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not is_listening(port):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"No server is listening on 127.0.0.1:{port} after {seconds} s."
            )
        time.sleep(0.05)


def machine_nats() -> str:
    """Return the URL of the machine's NATS, starting the service if it is down."""
    if not is_listening(4222):
        subprocess.run(_MACHINE_START, check=True)
        wait_for_port(4222, 10.0)
    return MACHINE_URL


def free_ports(count: int) -> list[int]:
    """Return ports that the kernel had free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def venv_nats_server() -> Path:
    """Return the nats-server binary installed in the virtual environment."""
    path = Path(sys.executable).parent / "nats-server"
    if not path.exists():
        found = shutil.which("nats-server")
        if found is None:
            raise RuntimeError("No nats-server binary beside the Python interpreter.")
        path = Path(found)
    return path


@dataclass
class Node:
    """One nats-server process of a private cluster."""

    name: str
    client_port: int
    cluster_port: int
    config: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server process with its configuration file."""
        # The child process has its own copy of the log file descriptor.
        with self.config.with_suffix(".log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(venv_nats_server()), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.client_port, 10.0)

    def kill(self) -> None:
        """Stop the server at once with SIGKILL, as a crash would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """Stop the server if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


@dataclass
class Cluster:
    """A JetStream cluster of private nats-server processes on loopback ports."""

    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Return the client URLs of every node, comma-separated."""
        return ",".join(f"nats://127.0.0.1:{n.client_port}" for n in self.nodes)

    @classmethod
    def create(cls, folder: Path, size: int = 3) -> Cluster:
        """Write the configuration of `size` nodes that route to each other."""
        ports = free_ports(2 * size)
        client_ports, cluster_ports = ports[:size], ports[size:]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster_ports)
        nodes = []
        for index in range(size):
            name = f"n{index + 1}"
            store = folder / name
            store.mkdir(parents=True)
            config = folder / f"{name}.conf"
            config.write_text(
                f"server_name: {name}\n"
                f"listen: 127.0.0.1:{client_ports[index]}\n"
                f"jetstream {{ store_dir: {str(store)!r} }}\n"
                "cluster {\n"
                "  name: plantbus-test\n"
                f"  listen: 127.0.0.1:{cluster_ports[index]}\n"
                f"  routes: [{routes}]\n"
                "}\n"
            )
            nodes.append(Node(name, client_ports[index], cluster_ports[index], config))
        return cls(nodes)

    def start(self) -> None:
        """Start every node."""
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        """Stop every node that still runs."""
        for node in self.nodes:
            node.stop()
