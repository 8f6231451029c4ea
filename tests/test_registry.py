from __future__ import annotations

import pytest

from gradsum.errors import UnknownNameError
from gradsum.registry import Registry


def test_unknown_name_lists_valid_names_and_close_matches() -> None:
    registry: Registry[int] = Registry("method")
    registry.add("gradcam", 1)
    registry.add("gradcam++", 2)
    registry.add("rollout", 3)
    with pytest.raises(UnknownNameError) as info:
        registry.get("gradcma", "--method")
    message = str(info.value)
    assert "did you mean gradcam" in message
    assert "--method" in message
    assert "valid: gradcam, gradcam++, rollout" in message


def test_duplicate_registration_is_refused() -> None:
    registry: Registry[int] = Registry("thing")
    registry.add("a", 1)
    with pytest.raises(RuntimeError):
        registry.add("a", 2)
