"""The leaderboard's files: the boards as JSON (what every other reader starts from), Markdown and LaTeX.

`leaderboard.json`:

    {"protocol": {"name", "hash"},
     "boards": [{"model", "architecture", "task", "seeds", "criteria", "kendall_w": {"checks", "seeds"},
                 "agreement", "headline",
                 "rows": [{"rank", "rank_low", "rank_high", "rank_kept", "method", "role", "verdict",
                           "criteria": {key: {"verdict", "margin", "margin_ci_low", "margin_ci_high",
                                              "margin_null", "rank"}}}]}]}

An undefined number is null. Floats keep `DIGITS` significant digits and keys are sorted, so the same boards
give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gradsum.errors import ResultsError
from gradsum.fileio import atomic_write_json, atomic_write_text
from gradsum.leaderboard.board import (
    CRITERION_FIELDS,
    CRITERION_TEXT,
    ROW_FIELDS,
    ROW_TEXT,
    Board,
    board_columns,
)
from gradsum.report.figures import latex

BOARD_JSON = "leaderboard.json"
BOARD_MARKDOWN = "leaderboard.md"
BOARD_LATEX = "leaderboard.tex"
#: Significant digits a float keeps in the files: far below any figure's bootstrap error, and it keeps the
#: bytes the same where only the last bits of a sum differ.
DIGITS = 10
#: How a cell shows an undefined number.
UNDEFINED = "—"
#: Characters LaTeX reads as commands, and what stands for each in text.
TEX_ESCAPES = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
)


def _number(value: Any) -> float | None:
    """A float rounded to `DIGITS` significant digits; None where undefined."""
    number = float(value)
    return float(f"{number:.{DIGITS}g}") if math.isfinite(number) else None


def _row(record: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        field: str(record[field]) if field in ROW_TEXT else _number(record[field]) for field in ROW_FIELDS
    }
    row["criteria"] = {
        key: {
            field: str(record[f"{key}_{field}"])
            if field in CRITERION_TEXT
            else _number(record[f"{key}_{field}"])
            for field in CRITERION_FIELDS
        }
        for key in keys
    }
    return row


def board_json(boards: Sequence[Board], protocol_name: str, protocol_hash: str) -> dict[str, Any]:
    """The boards as the JSON object of `leaderboard.json` (the layout in the module docstring)."""
    return {
        "protocol": {"name": protocol_name, "hash": protocol_hash},
        "boards": [
            {
                "model": board.model,
                "architecture": board.architecture,
                "task": board.task,
                "seeds": list(board.seeds),
                "criteria": list(board.criteria),
                "kendall_w": {
                    "checks": _number(board.kendall_w_checks),
                    "seeds": _number(board.kendall_w_seeds),
                },
                "agreement": board.agreement,
                "headline": board.headline,
                "rows": [_row(record, board.criteria) for record in board.rows.to_dict("records")],
            }
            for board in boards
        ],
    }


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else UNDEFINED


def _rank(value: float) -> str:
    return f"{value:g}" if math.isfinite(value) else UNDEFINED


def _cells(board: Board) -> pd.DataFrame:
    """The board's rows as text cells: rank, its interval, the kept share, method, role, verdict, and per
    criterion its verdict, margin [CI] over the null it is taken over, and the row's rank on it."""
    rows = []
    for record in board.rows.to_dict("records"):
        row = {
            "rank": _rank(record["rank"]),
            "95 % interval": f"[{_rank(record['rank_low'])}, {_rank(record['rank_high'])}]",
            "kept": f"{record['rank_kept']:.0%}" if math.isfinite(record["rank_kept"]) else UNDEFINED,
            "method": record["method"],
            "role": record["role"],
            "verdict": record["verdict"],
        }
        for key in board.criteria:
            margin = record[f"{key}_margin"]
            shown = f"{record[f'{key}_verdict']}"
            if math.isfinite(margin):
                low, high = record[f"{key}_margin_ci_low"], record[f"{key}_margin_ci_high"]
                shown += f", {_signed(margin)} [{_signed(low)}, {_signed(high)}] over {record[f'{key}_margin_null']}"
            row[key] = f"{shown} (rank {_rank(record[f'{key}_rank'])})"
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["rank", "95 % interval", "kept", "method", "role", "verdict", *board.criteria]
    )


def _title(board: Board) -> str:
    seeds = ", ".join(str(s) for s in board.seeds)
    return f"{board.model} ({board.architecture}, {board.task}), training seeds {seeds}"


def _w(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "undefined"


def _markdown_cell(text: object) -> str:
    # a bar inside a cell would end it
    return str(text).replace("|", "\\|")


def board_markdown(boards: Sequence[Board], protocol_name: str, protocol_hash: str) -> str:
    """The boards as Markdown: per board its headline, its table in rank order, Kendall's W and the
    agreement sentence."""
    lines = [f"# Leaderboard: {protocol_name}", "", f"Protocol `{protocol_name}`, hash `{protocol_hash}`."]
    for board in boards:
        cells = _cells(board)
        lines += [
            "",
            f"## {_title(board)}",
            "",
            f"**{board.headline}**",
            "",
            "| " + " | ".join(_markdown_cell(c) for c in cells.columns) + " |",
            "|" + "|".join("---:" if c in ("rank", "kept") else "---" for c in cells.columns) + "|",
            *(
                "| " + " | ".join(_markdown_cell(v) for v in row) + " |"
                for row in cells.itertuples(index=False)
            ),
            "",
            f"Kendall's W: checks {_w(board.kendall_w_checks)}, training seeds {_w(board.kendall_w_seeds)}. "
            f"{board.agreement}",
        ]
    return "\n".join(lines) + "\n"


def tex_escape(text: str) -> str:
    """`text` with every character LaTeX reads as a command escaped."""
    return text.translate(TEX_ESCAPES)


def board_latex(boards: Sequence[Board], protocol_name: str, protocol_hash: str) -> str:
    """The boards as booktabs LaTeX tables, one per board; every cell and caption escaped."""
    parts = [f"% leaderboard of protocol {tex_escape(protocol_name)}, hash {protocol_hash}"]
    for position, board in enumerate(boards):
        caption = tex_escape(
            f"{_title(board)}: {board.headline}. Kendall's W: checks {_w(board.kendall_w_checks)}, training seeds {_w(board.kendall_w_seeds)}."
        )
        parts.append(latex(_cells(board), caption, f"tab:leaderboard-{position}"))
    return "\n".join(parts)


def write_boards(
    folder: str | os.PathLike[str], boards: Sequence[Board], protocol_name: str, protocol_hash: str
) -> list[Path]:
    """Write `leaderboard.json`, `.md` and `.tex` into `folder` (each atomically); the paths written."""
    target = Path(folder)
    return [
        atomic_write_json(target / BOARD_JSON, board_json(boards, protocol_name, protocol_hash)),
        atomic_write_text(target / BOARD_MARKDOWN, board_markdown(boards, protocol_name, protocol_hash)),
        atomic_write_text(target / BOARD_LATEX, board_latex(boards, protocol_name, protocol_hash)),
    ]


def _field(obj: object, key: str, where: str, path: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ResultsError(f"{path}: {where}: missing field {key!r}")
    return obj[key]


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _board(data: object, where: str, path: Path) -> Board:
    criteria = tuple(str(k) for k in _field(data, "criteria", where, path))
    records = []
    for k, row in enumerate(_field(data, "rows", where, path)):
        at = f"{where}.rows[{k}]"
        record: dict[str, object] = {
            field: str(_field(row, field, at, path))
            if field in ROW_TEXT
            else _float(_field(row, field, at, path))
            for field in ROW_FIELDS
        }
        found = _field(row, "criteria", at, path)
        for key in criteria:
            entry = _field(found, key, f"{at}.criteria", path)
            for field in CRITERION_FIELDS:
                value = _field(entry, field, f"{at}.criteria.{key}", path)
                record[f"{key}_{field}"] = str(value) if field in CRITERION_TEXT else _float(value)
        records.append(record)
    w = _field(data, "kendall_w", where, path)
    return Board(
        model=str(_field(data, "model", where, path)),
        architecture=str(_field(data, "architecture", where, path)),
        task=str(_field(data, "task", where, path)),
        seeds=tuple(int(s) for s in _field(data, "seeds", where, path)),
        criteria=criteria,
        rows=pd.DataFrame(records, columns=board_columns(criteria)),
        kendall_w_checks=_float(_field(w, "checks", f"{where}.kendall_w", path)),
        kendall_w_seeds=_float(_field(w, "seeds", f"{where}.kendall_w", path)),
        agreement=str(_field(data, "agreement", where, path)),
        headline=str(_field(data, "headline", where, path)),
    )


def read_boards(folder: str | os.PathLike[str]) -> tuple[list[Board], dict[str, str]]:
    """The boards of a leaderboard folder and its protocol ({"name", "hash"}), from `leaderboard.json`.

    A missing or malformed file raises `ResultsError` naming the file (and the field).
    """
    path = Path(folder) / BOARD_JSON
    if not path.is_file():
        raise ResultsError(f"{path}: no leaderboard file here (write one with `gradsum leaderboard`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from error
    protocol = _field(data, "protocol", "top level", path)
    named = {key: str(_field(protocol, key, "protocol", path)) for key in ("name", "hash")}
    boards = [
        _board(b, f"boards[{k}]", path) for k, b in enumerate(_field(data, "boards", "top level", path))
    ]
    return boards, named


__all__ = [
    "BOARD_JSON",
    "BOARD_LATEX",
    "BOARD_MARKDOWN",
    "board_json",
    "board_latex",
    "board_markdown",
    "read_boards",
    "tex_escape",
    "write_boards",
]
