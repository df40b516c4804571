"""The `backbone` section of a hub file choosing and configuring JetStreamLog."""

from __future__ import annotations

import pydantic
import pytest

from plantbus.backbone.jetstream import JetStreamLog
from plantbus.config.model import HubConfig
from plantbus.hub import _make_log


def test_backbone_config_builds_jetstream_log() -> None:
    config = HubConfig.model_validate(
        {
            "backbone": {
                "kind": "jetstream",
                "url": "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
                "stream": "plant-1",
                "partitions": 32,
                "replicas": 3,
                "duplicate_window_seconds": 600,
                "retention": {"max_age_hours": 2, "max_megabytes": 1.5},
            }
        }
    )

    log = _make_log(config)

    assert isinstance(log, JetStreamLog)
    assert log.url == "nats://127.0.0.1:4222,nats://127.0.0.1:4223"
    assert log.stream == "plant-1"
    assert log.partitions == 32
    assert log.replicas == 3
    assert log.duplicate_window_seconds == 600
    assert log.max_age_seconds == 7200
    assert log.max_bytes == 1_572_864


def test_backbone_config_embedded_no_jetstream() -> None:
    assert _make_log(HubConfig.model_validate({})) is None


def test_backbone_config_stream_dot_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="stream"):
        HubConfig.model_validate({"backbone": {"kind": "jetstream", "stream": "a.b"}})
