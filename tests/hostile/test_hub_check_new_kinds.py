"""Hostile hub files with the newer kinds: check rejects what run would reject.

Each case is a hub file that `plantbus run` rejects when it builds its sources
and sinks. `plantbus check` must reject it too, naming the file, the line, the
key, the bad value and the rule.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from plantbus.config import load_hub
from plantbus.errors import ConfigError

HEAD = """\
hub: {name: hostile, data_dir: data}
pipelines:
  - name: feed
    steps:
      - deliver: {to: [out]}
"""
FILE_SINK = "sinks:\n  - {name: out, kind: file, path: out.jsonl}\n"
HTTP_SOURCE = "sources:\n  - {name: api, kind: http}\n"


def rest_sink(options: str) -> str:
    return (
        HTTP_SOURCE
        + "sinks:\n  - name: out\n    kind: rest\n"
        + "    url: http://127.0.0.1:9/orders\n"
        + "".join(f"    {line}\n" for line in options.splitlines())
    )


def mqtt_source(subscription: str, options: str = "") -> str:
    return (
        FILE_SINK
        + "sources:\n  - name: line1\n    kind: mqtt\n"
        + "".join(f"    {line}\n" for line in options.splitlines())
        + f"    subscriptions:\n      - {subscription}\n"
    )


def source(options: str) -> str:
    return (
        FILE_SINK
        + "sources:\n  - name: in\n"
        + "".join(f"    {line}\n" for line in options.splitlines())
    )


LAYOUT = (
    "layout:\n"
    "  event_type: production.workorder.completed.v1\n"
    "  fields: {work_order_id: {column: Auftrag}}\n"
)
NODE = "{node_id: 'ns=2;s=Press4.Running', machine_id: P4, type: %s%s}"

# (hub file body, text on the line of the bad key, key, text of the bad value)
CASES = {
    "rest body field": (
        rest_sink("body: {qty: 'data.quantity.value +'}"),
        "body",
        "sinks[0].body",
        "'data.quantity.value +'",
    ),
    "rest body whole": (
        rest_sink("body: '{\"a\": }'"),
        "body",
        "sinks[0].body",
        "'{\"a\": }'",
    ),
    "rest body list": (
        rest_sink("body: [data.item]"),
        "body",
        "sinks[0].body",
        "Input should be a valid string",
    ),
    "rest body number": (rest_sink("body: {qty: 5}"), "body", "sinks[0].body", "is 5"),
    "rest url placeholder": (
        HTTP_SOURCE
        + "sinks:\n  - name: out\n    kind: rest\n"
        + "    url: 'http://127.0.0.1:9/orders/{data.+}'\n",
        "url",
        "sinks[0].url",
        "'data.+'",
    ),
    "rest header": (
        rest_sink("headers: {X-Plant: '{plant ]}'}"),
        "X-Plant",
        "sinks[0].headers.X-Plant",
        "'plant ]'",
    ),
    "rest header name": (
        rest_sink("headers: {'X Plant': '{plant}'}"),
        "X Plant",
        "sinks[0].headers.X Plant",
        "'X Plant'",
    ),
    "rest idempotency header": (
        rest_sink("idempotency_header: ''"),
        "idempotency_header",
        "sinks[0].idempotency_header",
        "''",
    ),
    "rest idempotency key": (
        rest_sink("idempotency_key: 'id &'"),
        "idempotency_key",
        "sinks[0].idempotency_key",
        "'id &'",
    ),
    "rest reference": (
        rest_sink("reference: ']'"),
        "reference",
        "sinks[0].reference",
        "']'",
    ),
    "retry pattern": (
        rest_sink("retry: {permanent_errors: ['(']}"),
        "retry",
        "sinks[0].retry",
        "'('",
    ),
    "mqtt filter hash inside": (
        mqtt_source("{filter: 'plant1/#/state', type: maintenance.machine.down.v1}"),
        "filter",
        "sources[0].subscriptions[0].filter",
        "'plant1/#/state'",
    ),
    "mqtt filter plus in level": (
        mqtt_source("{filter: 'plant1/M+/state', type: maintenance.machine.down.v1}"),
        "filter",
        "sources[0].subscriptions[0].filter",
        "'plant1/M+/state'",
    ),
    "mqtt filter nul": (
        mqtt_source('{filter: "plant1/\\0", type: maintenance.machine.down.v1}'),
        "filter",
        "sources[0].subscriptions[0].filter",
        "U+0000",
    ),
    "mqtt key": (
        mqtt_source(
            "{filter: 'p/+', type: maintenance.machine.down.v1, key: 'segments[1'}"
        ),
        "key",
        "sources[0].subscriptions[0].key",
        "'segments[1'",
    ),
    "mqtt data": (
        mqtt_source(
            "{filter: 'p/+', type: maintenance.machine.down.v1, data: '{\"a\": }'}"
        ),
        "data",
        "sources[0].subscriptions[0].data",
        "'{\"a\": }'",
    ),
    "sparkplug unknown placeholder": (
        mqtt_source(
            "{filter: 'spBv1.0/#', format: sparkplug, node_machine_id: '{nod}'}"
        ),
        "node_machine_id",
        "sources[0].subscriptions[0].node_machine_id",
        "'{nod}'",
    ),
    "sparkplug open brace": (
        mqtt_source(
            "{filter: 'spBv1.0/#', format: sparkplug, device_machine_id: '{x'}"
        ),
        "device_machine_id",
        "sources[0].subscriptions[0].device_machine_id",
        "'{x'",
    ),
    "sparkplug device in node template": (
        mqtt_source(
            "{filter: 'spBv1.0/#', format: sparkplug, node_machine_id: '{device}'}"
        ),
        "node_machine_id",
        "sources[0].subscriptions[0].node_machine_id",
        "'{device}'",
    ),
    "mqtt tls file missing": (
        mqtt_source(
            "{filter: 'p/+', type: maintenance.machine.down.v1}",
            "broker: {tls: {ca_file: missing-ca.pem}}",
        ),
        "tls",
        "sources[0].broker.tls",
        "missing-ca.pem",
    ),
    "mqtt sink wildcard topic": (
        HTTP_SOURCE + "sinks:\n  - {name: out, kind: mqtt, topic: 'plant1/+/x'}\n",
        "topic",
        "sinks[0].topic",
        "'plant1/+/x'",
    ),
    "mqtt sink unknown placeholder": (
        HTTP_SOURCE + "sinks:\n  - {name: out, kind: mqtt, topic: 'p/{typ}'}\n",
        "topic",
        "sinks[0].topic",
        "'p/{typ}'",
    ),
    "opcua map": (
        source(
            "kind: opcua\nendpoint: opc.tcp://127.0.0.1:4840/\nnodes:\n  - "
            + NODE % ("maintenance.machine.down.v1", ", map: '{a: }'")
        ),
        "map",
        "sources[0].nodes[0].map",
        "'{a: }'",
    ),
    "opcua node id": (
        source(
            "kind: opcua\nendpoint: opc.tcp://127.0.0.1:4840/\nnodes:\n  - "
            + NODE.replace("ns=2;s=", "ns=x;q=") % ("maintenance.machine.down.v1", "")
        ),
        "node_id",
        "sources[0].nodes[0].node_id",
        "'ns=x;q=Press4.Running'",
    ),
    "opcua type without data": (
        source(
            "kind: opcua\nendpoint: opc.tcp://127.0.0.1:4840/\nnodes:\n  - "
            + NODE % ("quality.check.v1", "")
        ),
        "type",
        "sources[0].nodes[0].type",
        "'quality.check.v1'",
    ),
    "mtconnect devices file": (
        source("kind: mtconnect\nmode: shdr\nport: 7878\ndevices_file: nope.xml"),
        "devices_file",
        "sources[0].devices_file",
        "nope.xml",
    ),
    "csv unknown event type": (
        source(
            "kind: folder\npath: in\nformat: csv\n"
            + LAYOUT.replace("production.workorder.completed.v1", "no.such.v1")
        ),
        "layout",
        "sources[0].layout",
        "'no.such.v1'",
    ),
    "csv names without header": (
        source("kind: folder\npath: in\nformat: csv\n" + LAYOUT + "  header: false"),
        "layout",
        "sources[0].layout",
        "'Auftrag'",
    ),
    "fixed width without columns": (
        source("kind: folder\npath: in\nformat: fixed_width\n" + LAYOUT),
        "layout",
        "sources[0].layout",
        "'Auftrag'",
    ),
    "edi time zone": (
        source(
            "kind: folder\npath: in\nformat: x12\noutbox: out\ntimezone: Mars/Olympus"
        ),
        "timezone",
        "sources[0].timezone",
        "'Mars/Olympus'",
    ),
    "jetstream url": (
        HTTP_SOURCE + FILE_SINK + "backbone: {kind: jetstream, url: 'http://nats'}\n",
        "url",
        "backbone.url",
        "'http://nats'",
    ),
    "postgres dsn": (
        HTTP_SOURCE + FILE_SINK + "state: {kind: postgres, dsn: 'db1 plantbus'}\n",
        "dsn",
        "state.dsn",
        '"db1"',
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hub_check_rejects_bad_new_kind(tmp_path: Path, case: str) -> None:
    body, marker, key, value = CASES[case]
    hub_file = tmp_path / "hub.yaml"
    text = HEAD + body
    hub_file.write_text(text)
    # The last line that contains the marker, since the pipeline comes first.
    line = max(
        number
        for number, content in enumerate(text.splitlines(), start=1)
        if marker in content
    )

    with pytest.raises(ConfigError) as caught:
        load_hub(hub_file, environ={})

    message = str(caught.value)
    assert f"{hub_file}:{line}: key `{key}`" in message
    assert value in message


def test_hub_check_cli_rejects_rest_body_jsonata(
    tmp_path: Path, plantbus_command: Path
) -> None:
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(HEAD + rest_sink("body: {qty: 'data.quantity.value +'}"))

    completed = subprocess.run(
        [str(plantbus_command), "check", str(hub_file)],
        capture_output=True,
        timeout=60,
        env={"COLUMNS": "500", "PATH": "/usr/bin:/bin"},
    )
    output = (completed.stdout + completed.stderr).decode()

    assert completed.returncode == 2, output
    assert f"{hub_file}:12: key `sinks[0].body`" in output
    assert "Unexpected end of expression" in output


def test_hub_check_accepts_good_new_kinds(tmp_path: Path) -> None:
    """The checks above reject the bad values only, not these good ones."""
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(
        "hub: {name: good, data_dir: data}\n"
        "backbone: {kind: jetstream, url: 'nats://127.0.0.1:4222, 127.0.0.1:4223'}\n"
        "state: {kind: postgres, dsn: 'host=127.0.0.1 user=postgres'}\n"
        "sources:\n"
        "  - name: line1\n"
        "    kind: mqtt\n"
        "    subscriptions:\n"
        "      - {filter: 'p/+/#', type: maintenance.machine.down.v1, "
        "key: 'segments[1]', data: 'payload'}\n"
        "      - {filter: 'spBv1.0/#', format: sparkplug, "
        "node_machine_id: '{group}-{node}', device_machine_id: '{{x}}{device}'}\n"
        "sinks:\n"
        "  - name: out\n"
        "    kind: rest\n"
        "    url: 'http://127.0.0.1:9/orders/{data.work_order_id}'\n"
        "    headers: {X-Plant: '{plant}'}\n"
        "    body: {qty: 'data.quantity.value', item: {code: 'data.item'}}\n"
        "    idempotency_key: 'id & \"-1\"'\n"
        "  - {name: bus, kind: mqtt, topic: 'plant1/events/{type}/{key}'}\n"
        "pipelines:\n"
        "  - name: feed\n"
        "    steps:\n"
        "      - deliver: {to: [out, bus]}\n"
    )

    config = load_hub(hub_file, environ={})

    assert [sink.name for sink in config.sinks] == ["out", "bus"]
