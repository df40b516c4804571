"""Read a hub file, substitute environment variables and check it before start."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from plantbus.config.connector_checks import check_connectors
from plantbus.config.model import (
    STEP_KINDS,
    DeliverStep,
    EnrichStep,
    FilterStep,
    FolderSourceConfig,
    HubConfig,
    MapStep,
    RouteStep,
    TrytonOrdersSourceConfig,
    TrytonSinkConfig,
)
from plantbus.config.yaml_lines import (
    Location,
    YamlShapeError,
    line_of,
    load_with_lines,
)
from plantbus.errors import ConfigError
from plantbus.pipeline.mapping import compile_expression

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_hub(path: Path, *, environ: dict[str, str] | None = None) -> HubConfig:
    """Load and check a hub file; raise ConfigError naming the file, line and key."""
    environ = dict(os.environ) if environ is None else environ
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the hub file {str(path)!r}: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the hub file is not UTF-8 text (invalid byte at position "
            f"{exc.start}); save it as UTF-8."
        ) from exc

    try:
        data, lines = load_with_lines(text)
    except YamlShapeError as exc:
        raise ConfigError(f"{path}:{exc.line}: {exc}.") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: the hub file is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a hub file must be a YAML mapping at the top.")

    data = _substitute(data, (), environ, path, lines)
    data["base_dir"] = path.resolve().parent
    try:
        config = HubConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, lines)) from exc

    _check_references(config, path, lines)
    _resolve_paths(config)
    return config


def _substitute(
    value: Any,
    where: Location,
    environ: dict[str, str],
    path: Path,
    lines: dict[Location, int],
) -> Any:
    """Replace ${NAME} and ${NAME:-default} in strings with environment values."""
    if isinstance(value, dict):
        return {
            k: _substitute(v, (*where, k), environ, path, lines)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _substitute(v, (*where, i), environ, path, lines)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{path}:{line_of(lines, where)}: key `{_dotted(where)}` uses the "
            f"environment variable {name!r}, which is not set. Set it, or write "
            f"${{{name}:-default}} to give a default."
        )

    return _VARIABLE.sub(replace, value)


def _describe(exc: ValidationError, path: Path, lines: dict[Location, int]) -> str:
    problems = []
    for error in exc.errors():
        location = _yaml_location(error["loc"])
        line = line_of(lines, location)
        value = error.get("input")
        value_text = "" if isinstance(value, (dict, list)) else f" (value {value!r})"
        problems.append(
            f"{path}:{line}: key `{_dotted(location)}`{value_text}: {error['msg']}"
        )
    return "The hub file is invalid:\n  " + "\n  ".join(problems)


def _yaml_location(loc: tuple[Any, ...]) -> Location:
    """Drop the member tags that pydantic adds to locations inside tagged unions."""
    kept: list[str | int] = []
    for index, part in enumerate(loc):
        in_union = index >= 2 and loc[index - 2] in (
            "sources",
            "sinks",
            "systems",
            "steps",
        )
        following = loc[index + 1] if index + 1 < len(loc) else None
        # Steps repeat their kind (`map`, `map`); the first one is the tag.
        is_tag = part in _UNION_TAGS and (part not in STEP_KINDS or following == part)
        if in_union and is_tag:
            continue
        # Plain unions such as `str | dict` name the member type, as in
        # `body.dict[str,any]`; that is no key of the hub file.
        if isinstance(part, str) and _TYPE_LABEL.fullmatch(part):
            continue
        kept.append(part)
    return tuple(kept)


_TYPE_LABEL = re.compile(r"str|int|float|bool|(dict|list)\[.*\]")


# Names that pydantic puts into error locations for the members of tagged unions.
_UNION_TAGS = frozenset(
    {
        "http",
        "folder",
        "tryton_orders",
        "tryton",
        "file",
        "memory",
        "mqtt",
        "opcua",
        "mtconnect",
        "b2mml_folder",
        "rest",
        "oauth2_client_credentials",
        "api_key",
        "bearer",
        "validate",
        "enrich",
        "map",
        "filter",
        "route",
        "deliver",
    }
)


def _dotted(location: Location) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = part
    return text or "(top)"


def _check_references(
    config: HubConfig, path: Path, lines: dict[Location, int]
) -> None:
    """Check that every named system and sink exists and names are unique."""
    problems: list[str] = []

    def problem(location: Location, message: str) -> None:
        problems.append(
            f"{path}:{line_of(lines, location)}: key `{_dotted(location)}`: {message}"
        )

    sinks = [sink.name for sink in config.sinks]
    for kind, names in (
        ("sink", sinks),
        ("source", [source.name for source in config.sources]),
        ("pipeline", [p.name for p in config.pipelines]),
    ):
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                problem(
                    (f"{kind}s", index, "name"),
                    f"the {kind} name {name!r} is used twice; names must be unique",
                )
            seen.add(name)

    systems = set(config.systems)
    for index, source in enumerate(config.sources):
        if (
            isinstance(source, TrytonOrdersSourceConfig)
            and source.system not in systems
        ):
            problem(
                ("sources", index, "system"),
                f"no system is called {source.system!r}; known: {sorted(systems)}",
            )
    for index, sink in enumerate(config.sinks):
        if isinstance(sink, TrytonSinkConfig) and sink.system not in systems:
            problem(
                ("sinks", index, "system"),
                f"no system is called {sink.system!r}; known: {sorted(systems)}",
            )

    for p_index, pipeline in enumerate(config.pipelines):
        routed = False
        for s_index, step in enumerate(pipeline.steps):
            where = ("pipelines", p_index, "steps", s_index)
            if isinstance(step, EnrichStep) and step.enrich.system not in systems:
                problem(
                    (*where, "enrich", "system"),
                    f"no system is called {step.enrich.system!r}; "
                    f"known: {sorted(systems)}",
                )
            if isinstance(step, RouteStep):
                routed = True
                for r_index, rule in enumerate(step.route):
                    for name in rule.to:
                        if name not in sinks:
                            problem(
                                (*where, "route", r_index, "to"),
                                f"no sink is called {name!r}; known: {sinks}",
                            )
            if isinstance(step, DeliverStep):
                for name in step.deliver.to:
                    if name not in sinks:
                        problem(
                            (*where, "deliver", "to"),
                            f"no sink is called {name!r}; known: {sinks}",
                        )
                if not step.deliver.to and not routed:
                    problem(
                        (*where, "deliver"),
                        "`to` is empty and no route step comes before this "
                        "deliver step, so no sink would receive events",
                    )
            for key, expression in _expressions(step):
                try:
                    compile_expression(expression)
                except ConfigError as exc:
                    problem((*where, *key), str(exc))
        if not isinstance(pipeline.steps[-1], DeliverStep):
            problem(
                ("pipelines", p_index, "steps"),
                "the last step of a pipeline must be `deliver`",
            )

    check_connectors(config, problem)
    if problems:
        raise ConfigError("The hub file is invalid:\n  " + "\n  ".join(problems))


def _expressions(step: object) -> list[tuple[Location, str]]:
    """Return the JSONata expressions of a step with their key paths."""
    if isinstance(step, FilterStep):
        return [(("filter",), step.filter)]
    if isinstance(step, EnrichStep):
        return [(("enrich", "key"), step.enrich.key)]
    if isinstance(step, RouteStep):
        return [
            (("route", index, "when"), rule.when)
            for index, rule in enumerate(step.route)
            if rule.when
        ]
    if isinstance(step, MapStep):
        if step.map.expression is not None:
            return [(("map", "expression"), step.map.expression)]
        return [
            (("map", "fields", *path), text)
            for path, text in _leaves(step.map.fields or {}, ())
        ]
    return []


def _leaves(spec: dict[str, Any], path: Location) -> list[tuple[Location, str]]:
    found: list[tuple[Location, str]] = []
    for key, value in spec.items():
        if isinstance(value, dict):
            found.extend(_leaves(value, (*path, key)))
        else:
            found.append(((*path, key), str(value)))
    return found


def _resolve_paths(config: HubConfig) -> None:
    base = config.base_dir
    config.hub.data_dir = (base / config.hub.data_dir).resolve()
    for source in config.sources:
        if isinstance(source, FolderSourceConfig):
            source.path = (base / source.path).resolve()
            if source.schema_dir is not None:
                source.schema_dir = (base / source.schema_dir).resolve()
            if source.outbox is not None:
                source.outbox = (base / source.outbox).resolve()
    for sink in config.sinks:
        if hasattr(sink, "path"):
            sink.path = (base / sink.path).resolve()
