"""Create the state store and the partition leases that a hub file configures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plantbus.config.model import HubConfig
from plantbus.state.store import StateStore

if TYPE_CHECKING:
    from plantbus.state.leases import PartitionLeases


def make_state_store(config: HubConfig) -> StateStore:
    """Create the hub's state store, not yet started."""
    state = config.state
    if state.kind == "postgres":
        from plantbus.state.postgres import PostgresStateStore

        assert state.dsn is not None  # checked by StateConfig
        return PostgresStateStore(
            state.dsn,
            schema=state.schema_name,
            max_connections=state.max_connections,
        )

    from plantbus.state.sqlite import SqliteStateStore

    return SqliteStateStore(config.hub.data_dir / "state.sqlite")


def shares_work(config: HubConfig) -> bool:
    """Return whether several worker processes may run this hub file at once.

    They need a backbone outside the data folder and a PostgreSQL state store,
    which holds the partition leases that split the work between them.
    """
    return config.backbone.kind != "embedded" and config.state.kind == "postgres"


def make_leases(config: HubConfig) -> PartitionLeases | None:
    """Create the partition leases of a worker process, or None for one process."""
    if not shares_work(config):
        return None
    from plantbus.state.leases import PartitionLeases

    assert config.state.dsn is not None
    return PartitionLeases(
        config.state.dsn, config.hub.name, config.backbone.partitions
    )
