"""The leaderboard's page and figures: a `leaderboard.json` written here in the layout of `formats.board_json`,
its numbers checked in the page's cells and in the figure's points and whiskers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gradsum.cli import main
from gradsum.contract import MANIFEST, PLOTS, REPORT, write_table
from gradsum.errors import GradSUMError, UnknownNameError
from gradsum.evaluation.verdicts import FAIL, INCONCLUSIVE, NOT_RUN, PASS, UNINFORMATIVE
from gradsum.leaderboard.board import EXPECTED_ORDER
from gradsum.leaderboard.formats import BOARD_JSON, BOARD_LATEX, BOARD_MARKDOWN, read_boards
from gradsum.leaderboard.ladder import FIGURE_FORMATS, LADDER
from gradsum.leaderboard.page import (
    LADDER_SECTION,
    VERDICT_COLOURS,
    VERDICTS_ONLY,
    board_table,
    figure_stem,
    is_leaderboard_folder,
    ladder_figure_stem,
    margin_figure,
    write_leaderboard_report,
)

KEYS = ("causal_concordance", "localisation_mass")
NAN = math.nan
#: method → (role, rank, rank_low, rank_high, rank_kept, verdict, per key: (verdict, margin, ci_low,
#: ci_high, null, rank)), in rank order. The odd method name checks escaping.
ROWS: dict[str, tuple[Any, ...]] = {
    "control:oracle": (
        "control", 1.0, 1.0, 2.0, 0.87, PASS,
        ((PASS, 0.31, 0.25, 0.37, "null:class_area", 1.0), (PASS, 0.42, 0.4, 0.44, "null:positional", 1.0)),
    ),
    "gradcam": (
        "method", 2.5, 1.0, 3.0, 0.5, INCONCLUSIVE,
        ((INCONCLUSIVE, 0.02, -0.01, 0.05, "null:class_area", 2.0), (PASS, 0.12, 0.05, 0.2, "null:positional", 3.0)),
    ),
    "<b>lib:x</b>": (
        "method", 2.5, 2.0, 4.0, NAN, FAIL,
        ((FAIL, -0.2, -0.3, -0.1, "null:class_area", 3.0), (UNINFORMATIVE, NAN, NAN, NAN, "", 2.0)),
    ),
    "null:random": (
        "chance", 4.0, 4.0, 4.0, 1.0, FAIL,
        ((FAIL, -0.5, -0.6, -0.4, "null:class_area", 4.0), (FAIL, -0.3, -0.35, -0.25, "null:positional", 4.0)),
    ),
}  # fmt: skip
FINDING = "not the expected order: null:uniform (rank 1) does not rank below gradcam (rank 2)"


def _value(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _row(method: str, spec: tuple[Any, ...], keys: tuple[str, ...]) -> dict[str, Any]:
    role, rank, low, high, kept, verdict, per_key = spec
    fields = ("verdict", "margin", "margin_ci_low", "margin_ci_high", "margin_null", "rank")
    return {
        "rank": rank,
        "rank_low": low,
        "rank_high": high,
        "rank_kept": _value(kept),
        "method": method,
        "role": role,
        "verdict": verdict,
        "criteria": {
            key: {f: _value(v) for f, v in zip(fields, values, strict=True)}
            for key, values in zip(KEYS, per_key, strict=True)
            if key in keys
        },
    }


def _board(
    model: str, architecture: str, task: str, headline: str, keys: tuple[str, ...] = KEYS
) -> dict[str, Any]:
    return {
        "model": model,
        "architecture": architecture,
        "task": task,
        "seeds": [0, 2, 4],
        "criteria": list(keys),
        "kendall_w": {"checks": 0.62, "seeds": None if len(keys) < 2 else 0.81},
        "agreement": f"{model}: the checks agree on the order of the methods.",
        "headline": headline,
        "rows": [_row(method, spec, keys) for method, spec in ROWS.items()],
    }


def write_boards_json(folder: Path) -> Path:
    """A leaderboard folder of three boards: two CNN models (one with one check only) and a ViT."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "protocol": {"name": "synth-v1", "hash": "ab" * 32},
        "boards": [
            _board("vit", "vit", "steering", FINDING),
            _board("pilotnet", "cnn", "steering", EXPECTED_ORDER),
            _board("compact_cnn", "cnn", "obstacle", EXPECTED_ORDER, keys=KEYS[:1]),
        ],
    }
    (folder / BOARD_JSON).write_text(json.dumps(data, sort_keys=True))
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_boards_json(tmp_path / "synth-v1")


def _cells(html: str) -> list[list[str]]:
    """The body rows of the first table in `html`, each as its cells' inner HTML."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if row]


def test_a_boards_table_holds_its_rows_in_rank_order_with_their_numbers(folder: Path) -> None:
    boards, _ = read_boards(folder)
    pilotnet = next(b for b in boards if b.model == "pilotnet")
    rows = _cells(board_table(pilotnet))
    assert [r[2] for r in rows] == ["control:oracle", "gradcam", "&lt;b&gt;lib:x&lt;/b&gt;", "null:random"]
    oracle, gradcam, odd, random = rows
    assert oracle[:2] == ["1 [1, 2]", "87%"]
    assert gradcam[:2] == ["2.5 [1, 3]", "50%"]
    assert odd[1] == "—"  # no resample kept a rank: undefined, not 0 %
    assert oracle[3] == "known-answer control" and random[3] == "null: chance"
    # per check: verdict (coloured), margin [CI] over its null, rank on the check
    assert gradcam[5:8] == [
        gradcam[5],
        "+0.020 [-0.010, +0.050] over null:class_area",
        "2",
    ]
    assert 'class="inconclusive"' in gradcam[5] and ">inconclusive<" in gradcam[5]
    assert 'class="pass"' in gradcam[8] and gradcam[9] == "+0.120 [+0.050, +0.200] over null:positional"
    assert 'class="uninformative"' in odd[8] and odd[9] == "—"
    assert 'class="fail"' in random[4]


def test_the_page_puts_every_headline_first_then_each_architecture(folder: Path) -> None:
    page = write_leaderboard_report(folder).read_text()
    assert page.startswith("<!DOCTYPE html>")
    first_table = page.index("<table")
    assert page.index(FINDING) < first_table and page.index(EXPECTED_ORDER) < first_table
    # the finding is marked as one, above the table and in the list of headlines
    assert page.count(f'<p class="headline finding"><b>vit · steering (vit)</b>: {FINDING}</p>') == 1
    assert page.count(f'<p class="headline finding">{FINDING}</p>') == 1
    assert page.count(f'<p class="headline">{EXPECTED_ORDER}</p>') == 2
    # taxonomy order of families: the CNN boards come before the ViT's, in the order of the file
    assert page.index("<h2>cnn</h2>") < page.index("<h2>vit</h2>")
    assert page.index("pilotnet · steering (cnn)</h3>") < page.index("compact_cnn · obstacle (cnn)</h3>")
    assert "sha256 " + "ab" * 32 in page
    assert f"beside this page: {BOARD_MARKDOWN}, {BOARD_LATEX} and {BOARD_JSON}." in page
    assert page.count("<table>") == 3


def test_kendalls_w_and_the_agreement_sentence_are_under_each_table(folder: Path) -> None:
    page = write_leaderboard_report(folder).read_text()
    assert (
        page.count(
            "between the checks&#x27; rankings of the methods: 0.62; between the training seeds&#x27; (0, 2, 4): 0.81."
        )
        == 2
    )
    assert "(0, 2, 4): undefined (fewer than two rankings or two methods)." in page
    pilotnet = page.index("pilotnet · steering (cnn)</h3>")
    assert page.index("pilotnet: the checks agree", pilotnet) > page.index("</table>", pilotnet)


def test_the_page_is_self_contained_and_repeats_byte_for_byte(folder: Path) -> None:
    page = write_leaderboard_report(folder).read_bytes()
    written = {p.name: p.read_bytes() for p in sorted((folder / PLOTS).iterdir())}
    assert sorted(written) == sorted(
        f"{Path(figure_stem(a)).name}.{fmt}" for a in ("cnn", "vit") for fmt in FIGURE_FORMATS
    )
    assert written["leaderboard_cnn.png"].startswith(b"\x89PNG") and written[
        "leaderboard_cnn.pdf"
    ].startswith(b"%PDF")
    text = page.decode()
    assert text.count('src="data:image/png;base64,') == 2
    assert "http://" not in text and "https://" not in text
    assert write_leaderboard_report(folder).read_bytes() == page
    assert {p.name: p.read_bytes() for p in sorted((folder / PLOTS).iterdir())} == written


def test_the_figure_draws_each_rows_margin_and_ci_in_rank_order(folder: Path) -> None:
    boards, _ = read_boards(folder)
    fig = margin_figure(boards, "cnn")
    axes = fig.axes
    assert len(axes) == 4  # two CNN boards × two checks
    pilotnet_concordance, pilotnet_mass, compact_concordance, compact_mass = axes
    assert compact_concordance.axison and not compact_mass.axison  # compact_cnn ran one check only
    assert [t.get_text() for t in pilotnet_concordance.get_yticklabels()] == list(ROWS)
    assert pilotnet_concordance.get_title() == "pilotnet · steering: causal_concordance"
    # rank 1 at the top: y grows downwards
    assert pilotnet_concordance.get_ylim() == (3.5, -0.5)
    points = pilotnet_mass.collections[-1]
    expected = [(spec[6][1][1], y) for y, spec in enumerate(ROWS.values())]
    np.testing.assert_allclose(points.get_offsets(), expected)
    colours = [VERDICT_COLOURS[spec[6][1][0]] for spec in ROWS.values()]
    np.testing.assert_allclose(points.get_facecolors(), [_rgba(c) for c in colours])
    # the whiskers run from each CI's low to its high end (none for the undefined margin)
    segments = pilotnet_mass.containers[0].lines[2][0].get_segments()
    spans = [(s[0][0], s[1][0]) for s in segments if len(s)]
    np.testing.assert_allclose(spans, [(0.4, 0.44), (0.05, 0.2), (-0.35, -0.25)])
    with pytest.raises(UnknownNameError, match="'hybrid': no board of it; valid: cnn, vit"):
        margin_figure(boards, "hybrid")


def test_a_criterion_without_margins_shows_its_verdicts_at_zero(tmp_path: Path) -> None:
    # a check judged over models (sanity) has a verdict per row and no margin
    board = _board("pilotnet", "cnn", "steering", EXPECTED_ORDER, keys=KEYS[:1])
    board["criteria"].append("sanity")
    verdicts = [PASS, FAIL, INCONCLUSIVE, None]
    for row, verdict in zip(board["rows"], verdicts, strict=True):
        row["criteria"]["sanity"] = {
            "verdict": verdict, "margin": None, "margin_ci_low": None, "margin_ci_high": None,
            "margin_null": None, "rank": 1.0,
        }  # fmt: skip
    folder = tmp_path / "synth-v1"
    folder.mkdir()
    (folder / BOARD_JSON).write_text(
        json.dumps({"protocol": {"name": "synth-v1", "hash": "ab" * 32}, "boards": [board]})
    )
    boards, _ = read_boards(folder)
    _, sanity = margin_figure(boards, "cnn").axes
    assert sanity.get_title() == f"pilotnet · steering: sanity ({VERDICTS_ONLY})"
    points = sanity.collections[-1]
    np.testing.assert_allclose(points.get_offsets(), [(0.0, y) for y in range(len(verdicts))])
    colours = [VERDICT_COLOURS[v or NOT_RUN] for v in verdicts]
    np.testing.assert_allclose(points.get_facecolors(), [_rgba(c) for c in colours])
    assert not sanity.containers  # no whiskers


def _rgba(colour: str) -> tuple[float, ...]:
    from matplotlib.colors import to_rgba

    return to_rgba(colour)


def test_gradsum_report_writes_the_page_of_a_leaderboard_folder(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert is_leaderboard_folder(folder)
    assert main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder / REPORT)
    assert "GradSUM leaderboard · synth-v1" in (folder / REPORT).read_text()
    # a results folder (it has a manifest) is not a leaderboard folder, whatever else it holds
    (folder / MANIFEST).write_text("{}")
    assert not is_leaderboard_folder(folder)


def test_a_folder_without_boards_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(GradSUMError, match=re.escape(str(tmp_path / BOARD_JSON))):
        write_leaderboard_report(tmp_path)
    assert not (tmp_path / REPORT).exists()


#: method → (role, per level 0..3: (margin, verdict)); gradcam loses its pass at level 2 and falls 0.1 a level,
#: hirescam keeps it to the top level with a flat margin, the null's rows are not summarised.
LADDER_ROWS = {
    "gradcam": ("method", ((0.3, PASS), (0.2, PASS), (0.1, INCONCLUSIVE), (0.0, FAIL))),
    "hirescam": ("method", ((0.4, PASS), (0.4, PASS), (0.4, PASS), (0.4, PASS))),
    "null:random": ("chance", ((-0.2, FAIL), (-0.2, FAIL), (-0.2, FAIL), (-0.2, FAIL))),
}
R2 = (0.9, 0.85, 0.8, 0.7)


def write_ladder_table(folder: Path) -> None:
    rows = [
        {
            "model": "pilotnet",
            "seed": 0,
            "architecture": "cnn",
            "task": "steering",
            "method": method,
            "role": role,
            "knob": "shadows",
            "level": level,
            "criterion": "localisation_mass",
            "figure": margin + 0.5,
            "margin": margin,
            "margin_ci_low": margin - 0.05,
            "margin_ci_high": margin + 0.05,
            "margin_null": "null:class_area",
            "verdict": verdict,
            "metric": "r2",
            "metric_value": R2[level],
        }
        for method, (role, levels) in LADDER_ROWS.items()
        for level, (margin, verdict) in enumerate(levels)
    ]
    write_table(folder, LADDER, pd.DataFrame(rows, columns=list(LADDER.names)))


def test_the_ladder_section_shows_the_metric_per_level_and_the_earliest_loss_first(folder: Path) -> None:
    write_ladder_table(folder)
    page = write_leaderboard_report(folder).read_text()
    section = page[page.index(f'<section id="{LADDER_SECTION}">') :]
    assert page.index("<h2>vit</h2>") < page.index(f'<section id="{LADDER_SECTION}">')
    metric = _cells(section)[0]
    assert metric == ["pilotnet", "0", "r2", "0.9", "0.85", "0.8", "0.7"]
    degradation = _cells(section[section.index("the earliest loss first") :])
    assert [r[2] for r in degradation] == ["gradcam", "hirescam"]  # the null is not summarised
    assert degradation[0][3:5] == ["shadows", "localisation_mass"] and 'class="pass"' in degradation[0][5]
    assert degradation[0][6:] == ["level 2", "-0.100"]
    assert degradation[1][6:] == ["kept to level 3", "+0.000"]
    assert (folder / f"{ladder_figure_stem('cnn')}.png").is_file()
    assert (folder / f"{ladder_figure_stem('cnn')}.pdf").is_file()
    assert section.count('src="data:image/png;base64,') == 1
