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


def test_loader_names_line_and_key_of_wrong_value(tmp_path: Path) -> None:
    path = write(tmp_path, "hub:\n  name: x\nbackbone:\n  partitions: 0\n")
    message = error_of(path)
    assert f"{path}:4: key `backbone.partitions` (value 0)" in message
    assert "greater than or equal to 1" in message


def test_loader_rejects_misspelt_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
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
    )
    message = error_of(path)
    assert f"{path}:6: key `pipelines[0].retry.max_atempts`" in message
    assert "Extra inputs are not permitted" in message


def test_loader_rejects_unknown_step_kind(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
sinks:
  - {name: mem, kind: memory}
pipelines:
  - name: p
    steps:
      - mapp: {fields: {a: data.x}}
      - deliver: {to: [mem]}
""",
    )
    message = error_of(path)
    assert f"{path}:6: key `pipelines[0].steps[0]`" in message
    assert "one of: validate, enrich, map, filter, route, deliver" in message


def test_loader_rejects_unknown_sink_reference(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
sinks:
  - {name: mem, kind: memory}
pipelines:
  - name: p
    steps:
      - deliver:
          to: [erp]
""",
    )
    message = error_of(path)
    assert f"{path}:7: key `pipelines[0].steps[0].deliver.to`" in message
    assert "no sink is called 'erp'" in message


def test_loader_rejects_bad_source_option(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
sources:
  - name: drop
    kind: folder
    path: in
    schema_dir: xsd
    poll_seconds: -1
""",
    )
    message = error_of(path)
    assert f"{path}:6: key `sources[0].poll_seconds` (value -1)" in message


def test_loader_rejects_jsonata_syntax_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
sinks:
  - {name: mem, kind: memory}
pipelines:
  - name: p
    steps:
      - filter: "data.x = "
      - deliver: {to: [mem]}
""",
    )
    message = error_of(path)
    assert f"{path}:6: key `pipelines[0].steps[0].filter`" in message


def test_loader_reports_missing_environment_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "systems:\n  erp:\n    kind: tryton\n    url: ${ERP_URL}\n"
        "    database: demo\n    password: x\n",
    )
    message = error_of(path)
    assert f"{path}:4: key `systems.erp.url`" in message
    assert "'ERP_URL', which is not set" in message


def test_loader_reports_invalid_yaml_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "hub:\n  name: [unclosed\n")
    assert f"{path}:" in error_of(path)
    assert "not valid YAML" in error_of(path)


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


def test_loader_rejects_invalid_error_pattern(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
sinks:
  - name: erp
    kind: memory
    retry: {permanent_errors: ["HTTP (422"]}
""",
    )

    message = error_of(path)

    assert f"{path}:4: key `sinks[0].retry`" in message
    assert "not a valid regular expression" in message


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
