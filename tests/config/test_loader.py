"""Hub files: mistakes are reported before start with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantbus.config import load_hub
from plantbus.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_hub(path, environ=environ or {})
    return str(caught.value)


def test_demo_hub_file_loads_with_its_variables() -> None:
    config = load_hub(
        REPO / "examples/demo-plant/hub.yaml",
        environ={
            "TRYTON_URL": "http://127.0.0.1:1",
            "TRYTON_DATABASE": "demo",
            "TRYTON_PASSWORD": "secret",
        },
    )
    assert [p.name for p in config.pipelines] == [
        "erp-postings",
        "production-analytics",
        "machine-stops",
    ]
    assert config.systems["erp"].password == "secret"
    assert config.hub.data_dir.is_absolute()


# Each case is a hub file text and the fragments its error message must contain.
# The test replaces "{path}" in a fragment with the hub file path.
REJECTED_HUB_FILES = {
    "wrong value": (
        "hub:\n  name: x\nbackbone:\n  partitions: 0\n",
        [
            "{path}:4: key `backbone.partitions` (value 0)",
            "greater than or equal to 1",
        ],
    ),
    "misspelt key": (
        """\
sinks:
  - {name: mem, kind: memory}
pipelines:
  - name: p
    retry:
      max_atempts: 3
    steps:
      - deliver: {to: [mem]}
""",
        [
            "{path}:6: key `pipelines[0].retry.max_atempts`",
            "Extra inputs are not permitted",
        ],
    ),
    "unknown step kind": (
        """\
sinks:
  - {name: mem, kind: memory}
pipelines:
  - name: p
    steps:
      - mapp: {fields: {a: data.x}}
      - deliver: {to: [mem]}
""",
        [
            "{path}:6: key `pipelines[0].steps[0]`",
            "one of: validate, enrich, map, filter, route, deliver",
        ],
    ),
    "unknown sink reference": (
        """\
sinks:
  - {name: mem, kind: memory}
pipelines:
  - name: p
    steps:
      - deliver:
          to: [erp]
""",
        [
            "{path}:7: key `pipelines[0].steps[0].deliver.to`",
            "no sink is called 'erp'",
        ],
    ),
    "bad source option": (
        """\
sources:
  - name: drop
    kind: folder
    path: in
    schema_dir: xsd
    poll_seconds: -1
""",
        ["{path}:6: key `sources[0].poll_seconds` (value -1)"],
    ),
    "jsonata syntax error": (
        """\
sinks:
  - {name: mem, kind: memory}
pipelines:
  - name: p
    steps:
      - filter: "data.x = "
      - deliver: {to: [mem]}
""",
        ["{path}:6: key `pipelines[0].steps[0].filter`"],
    ),
    "missing environment variable": (
        "systems:\n  erp:\n    kind: tryton\n    url: ${ERP_URL}\n"
        "    database: demo\n    password: x\n",
        [
            "{path}:4: key `systems.erp.url`",
            "'ERP_URL', which is not set",
        ],
    ),
    "invalid error pattern": (
        """\
sinks:
  - name: erp
    kind: memory
    retry: {permanent_errors: ["HTTP (422"]}
""",
        [
            "{path}:4: key `sinks[0].retry`",
            "not a valid regular expression",
        ],
    ),
}


@pytest.mark.parametrize(
    ("text", "fragments"),
    REJECTED_HUB_FILES.values(),
    ids=REJECTED_HUB_FILES.keys(),
)
def test_loader_rejects_invalid_hub_file(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)

    message = error_of(path)

    for fragment in fragments:
        assert fragment.replace("{path}", str(path)) in message


def test_loader_reports_invalid_yaml_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "hub:\n  name: [unclosed\n")
    message = error_of(path)
    assert f"{path}:" in message
    assert "not valid YAML" in message


def test_loader_reads_sink_retry_and_circuit(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
sinks:
  - name: erp
    kind: memory
    retry: {max_attempts: 9, max_age_seconds: 600, permanent_errors: ["HTTP 422"]}
    circuit: {failure_threshold: 3, reset_seconds: 15}
pipelines:
  - name: p
    steps:
      - deliver: {to: [erp]}
""",
    )

    config = load_hub(path, environ={})

    sink = config.sinks[0]
    assert sink.retry is not None
    assert sink.retry.max_attempts == 9
    assert sink.retry.permanent_errors == ["HTTP 422"]
    assert sink.circuit.failure_threshold == 3


def test_loader_rejects_missing_b2mml_schema_folder(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
sources:
  - {name: mes, kind: folder, path: inbox, format: b2mml, schema_dir: no-xsd}
""",
    )
    message = error_of(path)
    assert "`sources[0].schema_dir`" in message
    assert f"{str((tmp_path / 'no-xsd').resolve())!r} is not a folder" in message
