"""The JSON-RPC client against a real trytond."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from plantbus.connectors.tryton.client import TrytonClient, TrytonError, decode, encode
from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError
from plantbus.sim.trytond_server import ADMIN_LOGIN, TrytondServer, free_port

pytestmark = pytest.mark.tryton


def test_encode_decode_round_trip_tryton_types() -> None:
    values = {
        "amount": Decimal("12.50"),
        "day": dt.date(2026, 3, 1),
        "at": dt.datetime(
            2026, 3, 1, 7, 30, 5, 120, tzinfo=dt.timezone(dt.timedelta(hours=1))
        ),
        "spent": dt.timedelta(seconds=90.5),
    }

    wire = encode(values)
    back = decode(__import__("json").dumps(wire))

    assert wire["amount"] == {"__class__": "Decimal", "decimal": "12.50"}
    assert wire["at"]["hour"] == 6
    assert back["amount"] == Decimal("12.50")
    assert back["day"] == dt.date(2026, 3, 1)
    assert back["at"] == dt.datetime(2026, 3, 1, 6, 30, 5, 120, tzinfo=dt.UTC)
    assert back["spent"] == dt.timedelta(seconds=90.5)


async def test_client_login_loads_user_context(tryton: TrytonClient) -> None:
    assert tryton.user_id is not None
    assert tryton.context.get("company")


async def test_client_search_read_returns_products(tryton: TrytonClient) -> None:
    rows = await tryton.search_read(
        "product.product", [("code", "like", "FG-%")], ["code", "cost_price"]
    )

    codes = sorted(row["code"] for row in rows)
    assert codes == ["FG-100", "FG-101", "FG-102", "FG-103", "FG-104"]
    assert all(isinstance(row["cost_price"], Decimal) for row in rows)


async def test_client_logs_in_again_after_session_end(tryton: TrytonClient) -> None:
    await tryton.call("common.db.logout")

    ids = await tryton.search("product.product", [("code", "=", "C-200")])

    assert len(ids) == 1


async def test_client_user_error_is_permanent(tryton: TrytonClient) -> None:
    with pytest.raises(TrytonError) as caught:
        await tryton.create("stock.lot", [{"number": "X-1"}])

    assert caught.value.kind == "UserError"
    assert "Product" in caught.value.message


async def test_client_unknown_method_is_permanent(tryton: TrytonClient) -> None:
    with pytest.raises(PermanentDeliveryError):
        await tryton.call("model.product.product.no_such_method", [], {})


async def test_client_wrong_password_is_permanent(tryton_server: TrytondServer) -> None:
    client = TrytonClient(
        tryton_server.url, tryton_server.database, ADMIN_LOGIN, "wrong password"
    )

    with pytest.raises(PermanentDeliveryError, match="login"):
        await client.start()
    await client.close()


async def test_client_server_down_is_retryable() -> None:
    client = TrytonClient(f"http://127.0.0.1:{free_port()}", "none", "admin", "x")

    with pytest.raises(RetryableDeliveryError):
        await client.start()
    await client.close()
