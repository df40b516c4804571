"""Hostile hub files: `plantbus check` names file, line and key, and never crashes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

VALID = """\
hub:
  name: hostile
  data_dir: data
sources:
  - name: shopfloor
    kind: http
sinks:
  - name: feed
    kind: file
    path: data/feed.jsonl
pipelines:
  - name: feed
    types: ["production.*"]
    steps:
      - validate: {}
      - deliver:
          to: [feed]
"""


def check(
    plantbus_command: Path, hub_file: Path, timeout: float = 30
) -> tuple[int, str]:
    """Run `plantbus check` on `hub_file`; return the exit code and the output."""
    completed = subprocess.run(
        [str(plantbus_command), "check", str(hub_file)],
        capture_output=True,
        timeout=timeout,
        env={"COLUMNS": "500", "PATH": "/usr/bin:/bin"},
    )
    return completed.returncode, (completed.stdout + completed.stderr).decode()


def write(folder: Path, text: str | bytes) -> Path:
    hub_file = folder / "hub.yaml"
    if isinstance(text, bytes):
        hub_file.write_bytes(text)
    else:
        hub_file.write_text(text)
    return hub_file


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        ("kind: http", "kind: http\n    colour: red", 7, "sources[0].colour"),
        ("path: data/feed.jsonl", "path: ${HOSTILE_UNSET}", 10, "HOSTILE_UNSET"),
        (
            "- validate: {}",
            '- filter: "data.quantity.value >"',
            15,
            "pipelines[0].steps[0].filter",
        ),
        ("to: [feed]", "to: [nowhere]", 17, "pipelines[0].steps[1].deliver.to"),
        (
            "    kind: http",
            "    kind: http\n  - name: shopfloor\n    kind: http",
            7,
            "sources[1].name",
        ),
        ("      - deliver:\n          to: [feed]\n", "", 14, "pipelines[0].steps"),
        ('types: ["production.*"]', 'types: "production.*"', 13, "pipelines[0].types"),
    ],
)
def test_check_names_file_line_and_key(
    plantbus_command: Path,
    tmp_path: Path,
    old: str,
    new: str,
    line: int,
    expected: str,
) -> None:
    assert old in VALID
    hub_file = write(tmp_path, VALID.replace(old, new))

    code, output = check(plantbus_command, hub_file)

    assert code == 2, output
    assert f"{hub_file}:{line}" in output
    assert expected in output


def test_check_prints_name_pattern_unchanged(
    plantbus_command: Path, tmp_path: Path
) -> None:
    hub_file = write(
        tmp_path,
        VALID.replace("  - name: feed\n    types", "  - name: Bad Name\n    types"),
    )

    code, output = check(plantbus_command, hub_file)

    assert code == 2, output
    assert "[a-z0-9]" in output


def test_check_reports_value_with_closing_tag(
    plantbus_command: Path, tmp_path: Path
) -> None:
    hub_file = write(tmp_path, 'api:\n  port: "[/x]"\n')

    code, output = check(plantbus_command, hub_file)

    assert code == 2, output
    assert "api.port" in output
    assert "[/x]" in output


def test_check_reports_file_not_utf8(plantbus_command: Path, tmp_path: Path) -> None:
    hub_file = write(tmp_path, b"hub:\n  name: \xff\xfe\n")

    code, output = check(plantbus_command, hub_file)

    assert code == 2, output
    assert str(hub_file) in output
    assert "Traceback" not in output


def test_check_reports_recursive_alias(plantbus_command: Path, tmp_path: Path) -> None:
    hub_file = write(tmp_path, "hub: &loop [*loop]\n")

    code, output = check(plantbus_command, hub_file)

    assert code == 2, output
    assert "RecursionError" not in output


def test_check_finishes_alias_expansion_quickly(
    plantbus_command: Path, tmp_path: Path
) -> None:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, 7):
        text += f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]\n"
    hub_file = write(tmp_path, text)

    try:
        code, output = check(plantbus_command, hub_file, timeout=4)
    except subprocess.TimeoutExpired:
        pytest.fail("plantbus check ran over 4 s on a 7-line hub file")

    assert code == 2, output


def test_check_reports_duplicate_key(plantbus_command: Path, tmp_path: Path) -> None:
    hub_file = write(
        tmp_path, VALID.replace("  name: hostile\n", "  name: a\n  name: b\n")
    )

    code, output = check(plantbus_command, hub_file)

    assert code == 2, output
    assert f"{hub_file}:3" in output
    assert "hub.name" in output
