"""The leaderboard's files: the JSON layout with hand-checked values, byte-identical rewrites, the round trip
through read_boards, Markdown and escaped booktabs LaTeX, and errors that name the file."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from board_fixtures import CRITERIA, MODEL, NULL, ORACLE, ROLES, per_seed

from gradsum.errors import ResultsError
from gradsum.leaderboard.board import Board, build_board
from gradsum.leaderboard.formats import (
    BOARD_JSON,
    BOARD_LATEX,
    BOARD_MARKDOWN,
    board_json,
    board_latex,
    board_markdown,
    read_boards,
    tex_escape,
    write_boards,
)

HASH = "ab" * 32


def board(model: str = MODEL) -> Board:
    return build_board(model, "cnn", "steering", per_seed(), CRITERIA, ROLES, 100, 0)


def test_json_layout_and_values():
    data = board_json([board()], "synth-v1", HASH)
    assert data["protocol"] == {"name": "synth-v1", "hash": HASH}
    (entry,) = data["boards"]
    assert (entry["model"], entry["architecture"], entry["task"]) == (MODEL, "cnn", "steering")
    assert entry["seeds"] == [0, 2] and entry["criteria"] == ["causal", "localisation"]
    # hand computations of test_board: W over checks 0.75, over seeds 78 / 84
    assert entry["kendall_w"]["checks"] == 0.75
    assert entry["kendall_w"]["seeds"] == pytest.approx(78 / 84, abs=1e-9)
    assert [row["method"] for row in entry["rows"]] == [ORACLE, "ig", "gradcam", "saliency", NULL]
    gradcam = entry["rows"][2]
    assert set(gradcam) == {
        "rank",
        "rank_low",
        "rank_high",
        "rank_kept",
        "method",
        "role",
        "verdict",
        "criteria",
    }
    assert gradcam["rank"] == 3.0 and gradcam["role"] == "method"
    causal = gradcam["criteria"]["causal"]
    assert set(causal) == {"verdict", "margin", "margin_ci_low", "margin_ci_high", "margin_null", "rank"}
    assert causal["margin"] == 0.25 and causal["margin_null"] == NULL and causal["rank"] == 2.5
    # the null has no other gating null to take a margin over: null, not NaN
    assert entry["rows"][4]["criteria"]["causal"]["margin"] is None
    text = json.dumps(data, allow_nan=False)  # no NaN anywhere
    assert "NaN" not in text


def test_same_boards_same_bytes(tmp_path: Path):
    first = write_boards(tmp_path / "a", [board()], "synth-v1", HASH)
    again = write_boards(tmp_path / "b", [board()], "synth-v1", HASH)
    assert [p.name for p in first] == [BOARD_JSON, BOARD_MARKDOWN, BOARD_LATEX]
    for a, b in zip(first, again, strict=True):
        assert a.read_bytes() == b.read_bytes()
    # floats keep ten significant digits, so the last bits of a sum do not reach the file
    rows = board().rows.assign(rank_kept=0.1 + 0.2)
    written = board_json([dataclasses.replace(board(), rows=rows)], "synth-v1", HASH)
    assert written["boards"][0]["rows"][0]["rank_kept"] == 0.3


def test_read_boards_round_trip(tmp_path: Path):
    original = [board(), board("vit")]
    write_boards(tmp_path, original, "synth-v1", HASH)
    boards, protocol = read_boards(tmp_path)
    assert protocol == {"name": "synth-v1", "hash": HASH}
    assert board_json(boards, "synth-v1", HASH) == board_json(original, "synth-v1", HASH)
    pd.testing.assert_frame_equal(boards[0].rows, original[0].rows, check_exact=False, rtol=1e-9)
    assert boards[1].model == "vit" and boards[0].seeds == (0, 2)
    assert math.isnan(boards[0].rows.set_index("method").loc[NULL, "causal_margin"])


def test_read_errors_name_the_file_and_field(tmp_path: Path):
    with pytest.raises(ResultsError, match=f"{BOARD_JSON}: no leaderboard file"):
        read_boards(tmp_path)
    (tmp_path / BOARD_JSON).write_text("{not json")
    with pytest.raises(ResultsError, match=f"{BOARD_JSON}: not valid JSON"):
        read_boards(tmp_path)
    data = board_json([board()], "synth-v1", HASH)
    del data["boards"][0]["rows"][1]["rank"]
    (tmp_path / BOARD_JSON).write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"leaderboard.json: boards\[0\].rows\[1\]: missing field 'rank'"):
        read_boards(tmp_path)


def test_markdown_table():
    rows = board().rows.copy()
    rows.loc[rows["method"] == "saliency", "method"] = "a|b"
    text = board_markdown([dataclasses.replace(board(), rows=rows)], "synth-v1", HASH)
    assert text.startswith(f"# Leaderboard: synth-v1\n\nProtocol `synth-v1`, hash `{HASH}`.\n")
    assert f"## {MODEL} (cnn, steering), training seeds 0, 2" in text
    assert "**oracle rows at the top and null rows at the bottom**" in text
    gradcam = next(line for line in text.splitlines() if "| gradcam |" in line)
    assert gradcam.startswith("| 3 | [")
    assert "+0.250 [" in gradcam and "over null:random (rank 2.5)" in gradcam
    assert "| a\\|b |" in text  # a bar in a name does not end its cell
    assert "Kendall's W: checks 0.75, training seeds 0.93." in text


def test_latex_is_booktabs_and_escaped():
    rows = board().rows.copy()
    rows.loc[rows["method"] == "saliency", "method"] = "my_method&co"
    text = board_latex([dataclasses.replace(board("compact_cnn"), rows=rows)], "synth-v1", HASH)
    assert text.startswith(f"% leaderboard of protocol synth-v1, hash {HASH}\n")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert text.count(rule) == 1
    assert "my\\_method\\&co" in text and "my_method" not in text
    assert "compact\\_cnn (cnn, steering)" in text
    assert tex_escape("50% of $x_1$ {a} ~ ^ \\") == (
        "50\\% of \\$x\\_1\\$ \\{a\\} \\textasciitilde{} \\textasciicircum{} \\textbackslash{}"
    )
