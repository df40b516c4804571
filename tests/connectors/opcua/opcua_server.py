"""Test helper: an asyncua server on 127.0.0.1 with a small press cell."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

NAMESPACE = "urn:plantbus:test:press-cell"

# The server's own log lines about every connection are noise in test output.
logging.getLogger("asyncua").setLevel(logging.WARNING)


class _Passwords(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        # Anonymous clients are let in too; a wrong password is not.
        if username is None or self.users.get(username) == password:
            return User(role=UserRole.User)
        return None


@dataclass
class PressServer:
    """A running server with the variables Fault, PartCount and Mode."""

    server: Server
    port: int
    namespace: int
    fault: Node
    part_count: Node
    mode: Node

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    async def write(
        self, node: Node, value: Any, variant: ua.VariantType, at: datetime
    ) -> None:
        """Write a value with an explicit source timestamp."""
        data_value = ua.DataValue(
            ua.Variant(value, variant), SourceTimestamp=at, ServerTimestamp=at
        )
        await node.write_value(data_value)

    async def fire_event(self, message: str, at: datetime, severity: int = 700) -> None:
        generator = await self.server.get_event_generator()
        generator.event.Message = ua.LocalizedText(message)
        generator.event.Severity = severity
        await generator.trigger(time_attr=at)

    async def stop(self) -> None:
        await self.server.stop()


async def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """Create a self-signed certificate (DER) and its private key (PEM)."""
    key, certificate = folder / f"{name}.pem", folder / f"{name}.der"
    await setup_self_signed_certificate(
        key,
        certificate,
        f"urn:plantbus:test:{name}",
        "127.0.0.1",
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        {"commonName": f"plantbus test {name}"},
    )
    return certificate, key


async def start_press_server(
    port: int = 0,
    users: dict[str, str] | None = None,
    certificate: tuple[Path, Path] | None = None,
) -> PressServer:
    """Start a server on 127.0.0.1:`port` (0: a free port) with the press cell.

    With `certificate` (DER file, PEM key) the server accepts only
    Basic256Sha256 with SignAndEncrypt.
    """
    server = Server(user_manager=_Passwords(users) if users else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    if certificate is not None:
        server.set_security_policy(
            [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        )
        await server.load_certificate(str(certificate[0]))
        await server.load_private_key(str(certificate[1]))
    if users:
        server.set_security_IDs(["Anonymous", "Username"])
    namespace = await server.register_namespace(NAMESPACE)
    press = await server.nodes.objects.add_object(
        ua.NodeId("Press4", namespace), ua.QualifiedName("Press4", namespace)
    )
    fault = await press.add_variable(
        ua.NodeId("Press4.Fault", namespace), "Fault", False, ua.VariantType.Boolean
    )
    part_count = await press.add_variable(
        ua.NodeId("Press4.PartCount", namespace), "PartCount", 0, ua.VariantType.UInt32
    )
    mode = await press.add_variable(
        ua.NodeId("Press4.Mode", namespace), "Mode", "IDLE", ua.VariantType.String
    )
    await server.start()
    return PressServer(server, server.bserver.port, namespace, fault, part_count, mode)
