"""Choosing the state store and the partition leases from the hub file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from plantbus.config.model import HubConfig
from plantbus.state.factory import make_leases, make_state_store, shares_work
from plantbus.state.postgres import PostgresStateStore
from plantbus.state.sqlite import SqliteStateStore

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=plantbus"


def test_factory_default_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    config = HubConfig.model_validate({"hub": {"data_dir": str(tmp_path)}})

    store = make_state_store(config)

    assert isinstance(store, SqliteStateStore)
    assert store.path == tmp_path / "state.sqlite"
    assert make_leases(config) is None


def test_factory_postgres_uses_dsn_and_schema() -> None:
    config = HubConfig.model_validate(
        {"state": {"kind": "postgres", "dsn": DSN, "schema_name": "plant_p1"}}
    )

    store = make_state_store(config)

    assert isinstance(store, PostgresStateStore)
    assert store.dsn == DSN
    assert store.schema == "plant_p1"


def test_factory_postgres_without_dsn_rejected() -> None:
    with pytest.raises(ValidationError, match=r"`state.dsn` is missing"):
        HubConfig.model_validate({"state": {"kind": "postgres"}})


def test_factory_sqlite_with_dsn_rejected() -> None:
    with pytest.raises(ValidationError, match=r"set `kind: postgres`"):
        HubConfig.model_validate({"state": {"dsn": DSN}})


def test_factory_schema_name_must_be_identifier() -> None:
    with pytest.raises(ValidationError, match="schema_name"):
        HubConfig.model_validate(
            {"state": {"kind": "postgres", "dsn": DSN, "schema_name": "a; drop"}}
        )


def test_factory_embedded_backbone_does_not_share_work() -> None:
    config = HubConfig.model_validate({"state": {"kind": "postgres", "dsn": DSN}})

    assert shares_work(config) is False
    assert make_leases(config) is None


def test_factory_jetstream_and_postgres_share_work() -> None:
    config = HubConfig.model_validate(
        {
            "hub": {"name": "plant-p1"},
            "backbone": {"kind": "jetstream", "partitions": 8},
            "state": {"kind": "postgres", "dsn": DSN},
        }
    )

    leases = make_leases(config)

    assert shares_work(config) is True
    assert leases is not None
    assert leases.hub == "plant-p1"
    assert leases.partitions == 8
    assert leases.dsn == DSN


def test_factory_jetstream_with_sqlite_state_does_not_share_work() -> None:
    config = HubConfig.model_validate({"backbone": {"kind": "jetstream"}})

    assert shares_work(config) is False
    assert make_leases(config) is None
