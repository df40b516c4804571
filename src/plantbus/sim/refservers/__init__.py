"""Reference servers for SaaS systems that have no open-source implementation.

Each module builds one `RefServer`: a FastAPI app with the auth, rate limit,
idempotency and fault modes of `base`, and the records of its system.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plantbus.sim.refservers import cmms, procurement, qms, supplier_portal, wms
from plantbus.sim.refservers.base import RefServer

__all__ = ["SYSTEMS", "RefServer", "build"]

SYSTEMS: dict[str, Callable[..., RefServer]] = {
    "wms": wms.build,
    "cmms": cmms.build,
    "qms": qms.build,
    "procurement": procurement.build,
    "supplier-portal": supplier_portal.build,
}


def build(system: str, **options: Any) -> RefServer:
    """Build the reference server of a system named in SYSTEMS."""
    try:
        factory = SYSTEMS[system]
    except KeyError:
        raise ValueError(
            f"No reference server for system {system!r}; choose one of "
            f"{', '.join(SYSTEMS)}."
        ) from None
    return factory(**options)
