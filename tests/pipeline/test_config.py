from __future__ import annotations

from pathlib import Path

import pytest

from gradsum.errors import SpecError
from gradsum.pipeline import config_from_dict, default_config, list_configs, load_config


def test_every_builtin_config_loads() -> None:
    names = list_configs()
    assert {"default", "cnn_vs_vit", "paper_figures", "new_truthset"} <= set(names)
    for name in names:
        assert load_config(name).name == name
    assert all(description for description in names.values())


def test_default_config_has_the_default_models() -> None:
    config = default_config()
    assert [m.name for m in config.models] == ["pilotnet", "vit", "hybrid_vit", "compact_cnn", "vit_obstacle"]
    assert config.truthset.generate is not None
    assert config.truthset.generate.size == (96, 192)


def test_unknown_field_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntruthset: {path: d, splitt: test}\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: unknown field 'truthset\.splitt'"):
        load_config(path)


def test_wrong_type_and_unknown_model_reference() -> None:
    with pytest.raises(SpecError, match=r"field 'batch_size' should be int"):
        config_from_dict({"batch_size": "many"})
    with pytest.raises(SpecError, match=r"methods\[0\]\.models: unknown model 'cnn'"):
        config_from_dict({"models": [{"name": "vit"}], "methods": [{"method": "gradcam", "models": ["cnn"]}]})


def test_missing_config_lists_builtins() -> None:
    with pytest.raises(SpecError, match=r"built-in: .*default"):
        load_config("no-such-config")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": [{"method": "gradcma"}]}, r"methods\[0\]\.method.*did you mean gradcam"),
        ({"targets": {"steering": "upward"}}, r"targets\.steering"),
        ({"targets": {"braking": "output"}}, r"unknown task 'braking'"),
        ({"normalise": "zscore"}, r"normalise.*minmax"),
        ({"methods": [{"method": "uniform", "normalise": "unit"}]}, r"methods\[0\]\.normalise"),
        ({"resolution": "pixel"}, r"resolution: 'pixel'"),
        (
            {"evaluation": {"options": {"sanity": {"blocks": "three"}}}},
            r"evaluation\.options\.sanity: field 'blocks'",
        ),
        ({"methods": [{"method": "gradcam", "role": "oracle"}]}, r"unknown role 'oracle'.*valid: method"),
    ],
)
def test_unknown_names_are_refused_before_any_work(change: dict[str, object], message: str) -> None:
    from gradsum.errors import GradSUMError
    from gradsum.pipeline.inputs import check_names

    with pytest.raises(GradSUMError, match=message):
        check_names(config_from_dict({"name": "x", **change}))
