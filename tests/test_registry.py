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


def test_unregister_removes_the_entry_and_returns_it() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("one", 1)
    registry.add("two", 2)
    assert registry.unregister("one") == 1
    assert registry.names() == ["two"]
    # the name is free again, and an unknown name is refused like `get` refuses it
    registry.add("one", 11)
    assert registry.get("one") == 11
    with pytest.raises(UnknownNameError, match="unknown widget 'three'; valid: one, two"):
        registry.unregister("three")
