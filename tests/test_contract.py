"""The results contract: every core table survives a write and a read with its values and dtypes, faults
name the file and the column, and no file name is spelled outside `gradsum.contract`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gradsum
from gradsum import contract
from gradsum.contract import BOOL, CORE_TABLES, FLOAT, INT, TEXT, TableSchema, read_table, write_table
from gradsum.errors import ResultsError

#: Two hand-picked cells per dtype: text that looks like a number, both flags, whole and real numbers.
CELLS = {TEXT: ["0001", "road"], BOOL: [True, False], INT: [7, -3], FLOAT: [0.25, -1.5]}


def _frame(schema: TableSchema) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(CELLS[dtype], dtype=dtype) for name, dtype in schema.columns})


@pytest.mark.parametrize("schema", CORE_TABLES, ids=[s.name for s in CORE_TABLES])
def test_every_core_table_round_trips_with_its_values_and_dtypes(schema: TableSchema, tmp_path: Path) -> None:
    frame = _frame(schema)
    path = write_table(tmp_path, schema, frame)
    assert path == tmp_path / schema.file
    back = read_table(tmp_path, schema)
    assert list(back.columns) == list(schema.names)
    for name, dtype in schema.columns:
        assert back[name].tolist() == CELLS[dtype], name
        if dtype == TEXT:
            assert pd.api.types.is_string_dtype(back[name].dtype), name
        else:
            assert back[name].dtype == np.dtype(dtype), name


def test_a_written_csv_is_pandas_own_csv_and_reads_back_to_the_same_bytes(tmp_path: Path) -> None:
    frame = _frame(contract.COMPARISONS)
    path = write_table(tmp_path, contract.COMPARISONS, frame)
    assert path.read_text(encoding="utf-8") == frame.to_csv(index=False)
    again = write_table(tmp_path / "again", contract.COMPARISONS, read_table(tmp_path, contract.COMPARISONS))
    assert again.read_bytes() == path.read_bytes()


def test_the_per_image_csv_fallback_is_read_when_there_is_no_parquet(tmp_path: Path) -> None:
    frame = _frame(contract.PER_IMAGE)
    (tmp_path / contract.PER_IMAGE.files[1]).write_text(frame.to_csv(index=False), encoding="utf-8")
    back = read_table(tmp_path, contract.PER_IMAGE)
    assert back["image"].tolist() == ["0001", "road"] and back["pixels"].tolist() == [7, -3]


def test_an_undeclared_table_keeps_identifiers_as_text_and_pandas_inference_elsewhere(tmp_path: Path) -> None:
    schema = TableSchema("sanity")
    (tmp_path / "sanity.csv").write_text("model,class,rho,detected\n007,1,0.5,True\n", encoding="utf-8")
    back = read_table(tmp_path, schema)
    assert back.loc[0, "model"] == "007" and back.loc[0, "class"] == "1"
    assert back.loc[0, "rho"] == 0.5 and back["detected"].dtype == bool


def test_an_empty_check_table_reads_as_an_empty_frame(tmp_path: Path) -> None:
    (tmp_path / "causal_effects.csv").write_text("\n", encoding="utf-8")
    back = read_table(tmp_path, contract.table_schema("causal_effects"))
    assert back.empty and list(back.columns) == []


def test_table_schema_finds_core_tables_by_name_and_defaults_to_name_csv() -> None:
    assert contract.table_schema("trust") is contract.TRUST
    assert contract.table_schema("localisation") == TableSchema("localisation", files=("localisation.csv",))


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    (tmp_path / contract.PER_IMAGE.file).write_bytes(b"PAR1 broken")
    with pytest.raises(
        ResultsError, match=rf"{re.escape(str(tmp_path / 'per_image.parquet'))}: cannot be read"
    ):
        read_table(tmp_path, contract.PER_IMAGE)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    _frame(contract.PROFILES).drop(columns="lift_ci_low").to_csv(tmp_path / "profiles.csv", index=False)
    with pytest.raises(ResultsError, match=r"profiles\.csv: missing column\(s\) 'lift_ci_low'"):
        read_table(tmp_path, contract.PROFILES)


def test_an_optional_column_may_be_missing(tmp_path: Path) -> None:
    older = _frame(contract.COMPARISONS).drop(columns=list(contract.COMPARISONS.optional))
    older.to_csv(tmp_path / "comparisons.csv", index=False)
    assert "test" not in read_table(tmp_path, contract.COMPARISONS).columns


def test_a_flag_that_is_not_true_or_false_is_named(tmp_path: Path) -> None:
    frame = _frame(contract.GROUND_TRUTH).astype({"agrees": object})
    frame.loc[1, "agrees"] = "maybe"
    frame.to_csv(tmp_path / "ground_truth.csv", index=False)
    with pytest.raises(ResultsError, match=r"ground_truth\.csv: column 'agrees' holds 'maybe'"):
        read_table(tmp_path, contract.GROUND_TRUTH)


def test_a_missing_table_is_none_only_when_that_is_asked_for(tmp_path: Path) -> None:
    assert read_table(tmp_path, contract.ATTENTION, missing_ok=True) is None
    with pytest.raises(ResultsError, match=r"per_image\.parquet: missing \(a required table"):
        read_table(tmp_path, contract.PER_IMAGE)


def test_a_required_table_needs_rows(tmp_path: Path) -> None:
    _frame(contract.PROFILES).head(0).to_csv(tmp_path / "profiles.csv", index=False)
    with pytest.raises(ResultsError, match=r"profiles\.csv: no rows"):
        read_table(tmp_path, contract.PROFILES)


def test_a_table_to_write_must_hold_its_columns(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"trust\.csv: the table to write lacks column\(s\) 'null'"):
        write_table(tmp_path, contract.TRUST, _frame(contract.TRUST).drop(columns="null"))


def test_a_schema_refuses_an_unknown_dtype() -> None:
    with pytest.raises(ValueError, match=r"unknown dtype.*valid: str, bool, int64, float64"):
        TableSchema("x", (("a", "text"),))


def _declared_names() -> set[str]:
    """Every file name the contract declares (str constants and tuples of them, and each table's files)."""
    names = {s for s in vars(contract).values() if isinstance(s, str) and re.fullmatch(r"[\w-]+\.\w+", s)}
    names |= {
        s
        for t in vars(contract).values()
        if isinstance(t, tuple)
        for s in t
        if isinstance(s, str) and "." in s
    }
    return names | {file for schema in CORE_TABLES for file in schema.files}


def test_no_file_name_is_spelled_outside_the_contract() -> None:
    names = _declared_names()
    assert {"per_image.parquet", "trust.csv", "manifest.json", "card.json", "report.html"} <= names
    package = Path(gradsum.__file__).parent
    quoted = re.compile("|".join(rf"[\"']{re.escape(name)}[\"']" for name in sorted(names)))
    spelled = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "contract.py" or path.parent != package
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if quoted.search(line)
    ]
    assert spelled == []


def test_as_bool_reads_true_false_text_and_an_empty_column(tmp_path: Path) -> None:
    text = pd.Series(["True", "False", "True"], dtype=object, name="detected")
    assert contract.as_bool(text, tmp_path / "t.csv").tolist() == [True, False, True]
    empty = contract.as_bool(pd.Series([], dtype=object, name="null"), tmp_path / "t.csv")
    assert empty.dtype == bool and empty.empty
