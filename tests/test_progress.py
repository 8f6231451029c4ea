from __future__ import annotations

import logging

import pytest

from gradsum.progress import Heartbeat


def test_a_heartbeat_logs_when_its_interval_has_passed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gradsum.progress")
    beat = Heartbeat("attribution", 10, every=0.0)
    beat.add(4)
    quiet = Heartbeat("report", 3, unit="figures", every=3600.0)
    quiet.add()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("attribution: 4/10 images (")
