"""The contract of every registered trust check, on one tiny generated fixture: it returns exactly the
tables its `tables` declare, each with the declared columns in order and of the declared dtypes, and a
summary of one row per model × method; a check the fixture cannot serve says why (`unavailable`) and
refuses to run with the same reason."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from gradsum.contract import BOOL, FLOAT, INT, TEXT, TableSchema
from gradsum.errors import GradSUMError
from gradsum.evaluation import CHECKS, EvaluationContext, PlannedMethod
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.models import build_model
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import open_truthset
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)
#: options that make every check write every table it declares, on as little work as it allows
OPTIONS = {
    "sanity": {"blocks": 1, "similarities": ["spearman"]},
    "perturbation": {"max_images": 2, "fractions": [0.5]},
    "granularity": {"methods": ["gradcam"]},
}
#: the checks this plain (not decorrelated) fixture cannot serve, and why
UNSERVED = {"shortcut": "no split 'test_decorrelated'"}
#: pandas dtypes a declared dtype accepts
ACCEPTS = {
    TEXT: pd.api.types.is_string_dtype,
    BOOL: pd.api.types.is_bool_dtype,
    INT: pd.api.types.is_integer_dtype,
    FLOAT: pd.api.types.is_float_dtype,
}


def _model(name: str, task: str, seed: int) -> LoadedModel:
    torch.manual_seed(seed)
    return LoadedModel(name, build_model("pilotnet", SIZE).eval(), {}, task, SIZE)


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> EvaluationContext:
    root = generate(
        Path(tmp_path_factory.mktemp("every_check")) / "set",
        count=10,
        seed=1,
        size=SIZE,
        splits=(0.2, 0.2, 0.6),
    )
    truthset = open_truthset(root, "test")
    assert isinstance(truthset, SyntheticTruthSet)
    models = [_model("steer", "steering", 0), _model("obst", "obstacle", 1)]
    uniform = next(m for m in NULL_EXPLAINERS if m.method == "uniform")
    options = {
        **OPTIONS,
        "sanity": {**OPTIONS["sanity"], "shuffled": {"steer": _model("twin", "steering", 2)}},
    }
    return EvaluationContext(
        truthset=truthset,
        indices=range(6),
        models=models,
        plan={m.name: [PlannedMethod("gradcam", label="gradcam"), uniform] for m in models},
        targets={"steering": "output", "obstacle": "positive"},
        batch_size=6,
        n_resamples=20,
        options=options,
    )


def _dtype_faults(frame: pd.DataFrame, schema: TableSchema) -> list[str]:
    if frame.empty:
        return []
    return [
        f"{schema.name}.{name}: {frame[name].dtype}, declared {dtype}"
        for name, dtype in schema.columns
        if not ACCEPTS[dtype](frame[name].dtype)
    ]


def test_every_registered_check_is_covered() -> None:
    assert set(CHECKS.names()) >= {"breakdown", "causal", "granularity", "localisation", "perturbation"}
    assert set(UNSERVED) <= set(CHECKS.names())


@pytest.mark.parametrize("name", CHECKS.names())
def test_a_check_returns_exactly_its_declared_tables(name: str, context: EvaluationContext) -> None:
    check = CHECKS.get(name)()
    assert check.name == name and check.description
    reason = check.unavailable(context.truthset)
    if name in UNSERVED:
        assert reason is not None and UNSERVED[name] in reason
        with pytest.raises(GradSUMError) as refused:
            check.run(context)
        assert str(refused.value) == reason
        return
    assert reason is None
    result = check.run(context)
    assert list(result.tables) == [schema.name for schema in check.tables]
    faults = []
    for schema in check.tables:
        frame = result.tables[schema.name]
        assert tuple(frame.columns) == schema.names, schema.name
        faults += _dtype_faults(frame, schema)
    assert faults == []
    summary = result.summary
    assert list(summary.columns[:2]) == ["model", "method"]
    assert not summary.duplicated(["model", "method"]).any()
    for criterion in result.criteria:
        assert criterion.check == name
        assert result.per_image is not None and criterion.column in result.per_image.columns
