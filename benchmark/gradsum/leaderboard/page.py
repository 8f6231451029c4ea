"""The leaderboard's page: one self-contained HTML file beside `leaderboard.json`, and a figure per architecture.

It lives in the leaderboard stage, not in `gradsum.report`: the report's floor is below the leaderboard's
(docs/design.md), so the report cannot read the boards; the page reuses the report's building blocks from
above (`report.page`, the report's CSS and embedded figures, `report.plots.ci_errors`).

The page, in order: every board's headline (the oracle rows at the top and the null rows at the bottom, or
the finding that breaks it); then per architecture its margin figure and, per protocol model, its table:
the rank with its 2.5–97.5 % range over the resamples (images and training seeds) and the share of
resamples that keep it, the overall verdict, and per check the verdict, the margin over the best gating null
with its CI (which includes the variation across training seeds), that null, and the row's rank on the
check; under each table Kendall's W between the checks' rankings and between the training seeds', and the
agreement sentence. It formats what `read_boards` gives; it computes no figure of its own.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradsum.contract import MANIFEST, PLOTS, REPORT, read_table
from gradsum.errors import UnknownNameError
from gradsum.evaluation.base import CONTROL, METHOD, NULL_ROLES
from gradsum.evaluation.verdicts import FAIL, INCONCLUSIVE, MEANINGS, NOT_RUN, PASS, UNINFORMATIVE
from gradsum.fileio import atomic_write_bytes, atomic_write_text
from gradsum.leaderboard.board import EXPECTED_ORDER, Board
from gradsum.leaderboard.formats import BOARD_JSON, BOARD_LATEX, BOARD_MARKDOWN, read_boards
from gradsum.leaderboard.ladder import FIGURE_FORMATS, LADDER, ladder_plot, ladder_summary
from gradsum.leaderboard.ladder import FIGURE_STEM as LADDER_STEM
from gradsum.report import plots
from gradsum.report.html import CSS, LEVEL, ROLE_LABELS, Plot, figure
from gradsum.report.page import interval_text, paragraph, scroll, table, verdict_span
from gradsum.report.writer import slug
from gradsum.taxonomy import FAMILIES

#: Each architecture's figure: `plots/leaderboard_<architecture>.<format>`.
FIGURE_STEM = "leaderboard"
#: The page's section of the difficulty ladder (its anchor and the `Plot.section` of its figures).
LADDER_SECTION = "ladder"
#: A marker's colour in the figure: the colour the page's CSS gives the verdict.
VERDICT_COLOURS = {
    PASS: "#176317",
    FAIL: "#aa1111",
    INCONCLUSIVE: "#8a5a00",
    UNINFORMATIVE: "#666666",
    NOT_RUN: "#999999",
}
#: The figure's size in inches: per check panel across, per board row down, the space a panel's titles take
#: and the method names left of the first panel.
PANEL_WIDTH, ROW_HEIGHT, PANEL_HEIGHT, LABEL_WIDTH = 3.0, 0.24, 0.9, 1.5
#: Margins and their CIs on the page: signed, three decimals (a localisation margin is often below 0.01).
MARGIN_DIGITS = 3
MARGIN_FORMAT = f"+.{MARGIN_DIGITS}f"
EXTRA_CSS = """
.headline { margin: 0.3em 0; } td.rank { font-weight: bold; }
"""


def is_leaderboard_folder(folder: str | os.PathLike[str]) -> bool:
    """True for a leaderboard folder: it holds `leaderboard.json` and no results manifest."""
    path = Path(folder)
    return (path / BOARD_JSON).is_file() and not (path / MANIFEST).is_file()


def in_family_order(present: set[str]) -> list[str]:
    """Architecture names in page order: the model families in taxonomy order, then any other name sorted."""
    return [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES))


def architectures(boards: Sequence[Board]) -> list[str]:
    """The boards' architectures, in page order."""
    return in_family_order({board.architecture for board in boards})


def figure_stem(architecture: str) -> str:
    """The path of an architecture's figure under the leaderboard folder, without its format."""
    return f"{PLOTS}/{FIGURE_STEM}_{slug(architecture)}"


def _number(value: Any) -> float:
    """A cell as a float: NaN for anything that is no number (None, text, a flag)."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def rank_text(rank: Any, low: Any = math.nan, high: Any = math.nan) -> str:
    """ "rank [low, high]" (ties are averaged, so a rank may be 2.5), "rank" without a range, "—" without
    a rank."""
    value = _number(rank)
    if not math.isfinite(value):
        return "—"
    if not math.isfinite(_number(low)):
        return f"{value:g}"
    return f"{value:g} [{_number(low):g}, {_number(high):g}]"


def kept_text(share: Any) -> str:
    """The share of resamples that keep the row's rank as a percentage; "—" where it is undefined."""
    value = _number(share)
    return f"{value:.0%}" if math.isfinite(value) else "—"


def margin_text(record: Mapping[str, Any], key: str) -> str:
    """ "margin [CI] over <null>" of one check of a row; "—" without a margin."""
    stem = f"{key}_margin"
    margin = interval_text(
        _number(record.get(stem)),
        _number(record.get(f"{stem}_ci_low")),
        _number(record.get(f"{stem}_ci_high")),
        MARGIN_FORMAT,
    )
    null = _text(record.get(f"{stem}_null"))
    return f"{margin} over {null}" if margin != "—" and null else margin


def _verdict(record: Mapping[str, Any], column: str) -> str:
    """A row's verdict in `column`, coloured, its meaning as the tooltip."""
    outcome = _text(record.get(column)) or NOT_RUN
    return verdict_span(outcome, outcome, MEANINGS.get(outcome, ""))


def _criterion_cells(record: Mapping[str, Any], key: str) -> list[str]:
    return [
        _verdict(record, f"{key}_verdict"),
        escape(margin_text(record, key)),
        escape(rank_text(record.get(f"{key}_rank"))),
    ]


def board_table(board: Board) -> str:
    """One board as an HTML table in rank order: rank [range], % kept, method, role, verdict, then per check
    its verdict (coloured, the meaning as a tooltip), margin [CI] over its null, and the row's rank on it."""
    keys = list(board.criteria)
    heads = ("rank [2.5–97.5 %]", "rank kept", "method", "role", "verdict")
    first = "".join(f'<th rowspan="2">{escape(h)}</th>' for h in heads)
    first += "".join(f'<th colspan="3">{escape(k)}</th>' for k in keys)
    below = ("verdict", f"margin over the best gating null [{LEVEL} CI]", "rank")
    second = "".join(f"<th>{escape(h)}</th>" for _ in keys for h in below)
    rows = []
    for record in board.rows.to_dict("records"):
        role = str(record["role"])
        cells = [
            escape(rank_text(record["rank"], record["rank_low"], record["rank_high"])),
            escape(kept_text(record["rank_kept"])),
            escape(str(record["method"])),
            escape(ROLE_LABELS.get(role, role)),
            _verdict(record, "verdict"),
        ]
        cells += [cell for key in keys for cell in _criterion_cells(record, key)]
        css = " class=null" if role in NULL_ROLES else " class=control" if role == CONTROL else ""
        body = "".join(
            f'<td class="rank">{c}</td>' if i == 0 else f"<td>{c}</td>" for i, c in enumerate(cells)
        )
        rows.append(f"<tr{css}>{body}</tr>")
    head = f"<thead><tr>{first}</tr><tr>{second}</tr></thead>"
    return scroll(f"<table>{head}<tbody>{''.join(rows)}</tbody></table>")


def w_text(value: Any) -> str:
    """Kendall's W with two decimals, or why it is undefined."""
    w = _number(value)
    return f"{w:.2f}" if math.isfinite(w) else "undefined (fewer than two rankings or two methods)"


def agreement_lines(board: Board) -> str:
    """Kendall's W between the checks' rankings and between the training seeds', then the agreement sentence."""
    seeds = ", ".join(str(s) for s in board.seeds)
    return paragraph(
        f"Kendall's W (1: every ranking the same; 0: no agreement) between the checks' rankings of the "
        f"methods: {w_text(board.kendall_w_checks)}; between the training seeds' ({seeds}): "
        f"{w_text(board.kendall_w_seeds)}."
    ) + paragraph(board.agreement)


def board_title(board: Board) -> str:
    """ "model · task (architecture)": how the page and the figure name a board."""
    return f"{board.model} · {board.task} ({board.architecture})"


def headline_css(board: Board) -> str:
    """The CSS classes of a board's headline: a finding (marked) wherever the order is not the expected one."""
    return "headline" if board.headline == EXPECTED_ORDER else "headline finding"


def in_page_order(boards: Sequence[Board]) -> list[Board]:
    """The boards by architecture (`architectures` order), in their own order within one."""
    return [
        board
        for architecture in architectures(boards)
        for board in boards
        if board.architecture == architecture
    ]


def headlines(boards: Sequence[Board]) -> str:
    """Every board's headline, one line each, in page order."""
    return "".join(
        f'<p class="{headline_css(board)}"><b>{escape(board_title(board))}</b>: {escape(board.headline)}</p>'
        for board in in_page_order(boards)
    )


#: The panel title's note for a criterion judged without a margin (a check over models, such as sanity):
#: its verdicts stand at 0.
VERDICTS_ONLY = "verdicts only, no margin"


def _panel(ax: Axes, board: Board, key: str) -> None:
    rows = board.rows
    y = np.arange(len(rows))
    stem = f"{key}_margin"
    margins = rows[stem].to_numpy(float)
    title = f"{board.model} · {board.task}: {key}"
    if np.isnan(margins).all():
        margins = np.zeros(len(rows))
        title += f" ({VERDICTS_ONLY})"
    else:
        errors = plots.ci_errors(margins, rows[f"{stem}_ci_low"], rows[f"{stem}_ci_high"])
        ax.errorbar(margins, y, xerr=errors, fmt="none", ecolor="#444444", elinewidth=1, capsize=2)
    outcomes = [_text(v) or NOT_RUN for v in rows[f"{key}_verdict"]]
    ax.scatter(
        margins, y, c=[VERDICT_COLOURS.get(o, VERDICT_COLOURS[NOT_RUN]) for o in outcomes], zorder=3, s=18
    )
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, [str(m) for m in rows["method"]], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def margin_figure(boards: Sequence[Board], architecture: str) -> Figure:
    """One architecture's boards: a row of panels per board, one panel per check, each row of the board
    (rank order, best at the top) at its margin over the best gating null with the CI across images and
    training seeds, coloured by its verdict on the check; dashed at 0, where the row equals that null."""
    chosen = [board for board in boards if board.architecture == architecture]
    if not chosen:
        raise UnknownNameError(
            f"architecture {architecture!r}: no board of it; valid: {', '.join(architectures(boards))}"
        )
    keys = list(dict.fromkeys(key for board in chosen for key in board.criteria))
    height = sum(PANEL_HEIGHT + ROW_HEIGHT * len(board.rows) for board in chosen) + PANEL_HEIGHT
    fig = Figure(figsize=(PANEL_WIDTH * len(keys) + LABEL_WIDTH, height), layout="constrained")
    axes = fig.subplots(len(chosen), len(keys), squeeze=False, sharey="row")
    for board, row in zip(chosen, axes, strict=True):
        for key, ax in zip(keys, row, strict=True):
            if key in board.criteria:
                _panel(ax, board, key)
            else:
                ax.set_axis_off()
    fig.supxlabel("margin over the best gating null", fontsize=8)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colour, label=outcome)
        for outcome, colour in VERDICT_COLOURS.items()
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=7, frameon=False)
    return fig


def figure_caption(architecture: str) -> str:
    """The page's caption of an architecture's figure."""
    return (
        f"{architecture}: each row's margin over the best gating null per check, rows in rank order (best at "
        f"the top), whiskers the {LEVEL} CI over images and training seeds, colour the verdict on the check"
    )


def ladder_architectures(ladder: pd.DataFrame) -> list[str]:
    """The architectures the ladder has method rows of (those `ladder_plot` draws), in page order."""
    return in_family_order({str(a) for a in ladder.loc[ladder["role"] == METHOD, "architecture"]})


def ladder_figure_stem(architecture: str) -> str:
    """The path of an architecture's ladder figure under the leaderboard folder (as `write_ladder` names it)."""
    return f"{PLOTS}/{LADDER_STEM}_{architecture}"


def ladder_caption(architecture: str) -> str:
    """The page's caption of an architecture's ladder figure."""
    return (
        f"{architecture}: each method's margin over the best gating null against the knob's level (0: the "
        f"clean scenes), one line per method and training seed, whiskers the {LEVEL} CI over images, filled "
        "where the verdict is pass"
    )


def metric_table(ladder: pd.DataFrame) -> pd.DataFrame:
    """Per protocol model and training seed, its task metric at each knob × level (columns "knob level")."""
    runs = ladder.drop_duplicates(["model", "seed", "knob", "level"])
    grid = runs.pivot_table(
        index=["model", "seed", "metric"], columns=["knob", "level"], values="metric_value", aggfunc="first"
    )
    grid.columns = [f"{knob} {level}" for knob, level in grid.columns]
    return grid.reset_index()


def slope_text(slope: Any) -> str:
    """A margin's slope per level as a margin is shown; "—" where undefined. A fit's rounding residue (a flat
    margin's slope of -1e-17) shows as +0.000, not -0.000."""
    value = _number(slope)
    return f"{round(value, MARGIN_DIGITS) + 0.0:{MARGIN_FORMAT}}" if math.isfinite(value) else "—"


def degradation_table(ladder: pd.DataFrame) -> str:
    """`ladder_summary` of the methods as an HTML table, the earliest loss of the clean verdict first (a
    verdict kept to the top level last), then the steepest fall of the margin per level."""
    methods = set(ladder.loc[ladder["role"] == METHOD, "method"])
    summary = ladder_summary(ladder)
    summary = summary[summary["method"].isin(methods)].assign(
        _lost=lambda f: f["lost_at"].fillna(math.inf), _slope=lambda f: f["slope"].fillna(math.inf)
    )
    summary = summary.sort_values(["_lost", "_slope", "model", "seed", "method", "knob"], kind="stable")
    top = int(ladder["level"].max())
    heads = (
        "model",
        "seed",
        "method",
        "knob",
        "criterion",
        "clean verdict",
        "verdict lost at",
        "margin per level",
    )
    rows = []
    for r in summary.to_dict("records"):
        lost = _number(r["lost_at"])
        cells = [
            escape(str(r["model"])),
            escape(str(r["seed"])),
            escape(str(r["method"])),
            escape(str(r["knob"])),
            escape(str(r["criterion"])),
            _verdict(r, "clean_verdict"),
            escape(f"level {lost:g}" if math.isfinite(lost) else f"kept to level {top}"),
            escape(slope_text(r["slope"])),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in heads) + "</tr></thead>"
    return scroll(f"<table>{head}<tbody>{''.join(rows)}</tbody></table>")


def ladder_section(ladder: pd.DataFrame, shown: Sequence[Plot]) -> str:
    """The ladder: what it is, the task metric per level, each architecture's figure, then which methods
    lose their clean verdict first and how fast their margins fall."""
    gallery = "".join(figure(p) for p in shown if p.section == LADDER_SECTION)
    return (
        paragraph(
            "The difficulty ladder: the protocol's models, trained on a mix of levels, judged on the same test "
            "scenes rendered at each level of one knob at a time (level 0: the clean scenes). First the task "
            "metric per level, which says whether the models stay accurate as the scenes get harder."
        )
        + table(metric_table(ladder))
        + (f'<div class="gallery">{gallery}</div>' if gallery else "")
        + paragraph(
            "Per method, knob and check: the first level whose verdict differs from the clean one, and the "
            "least-squares slope of the margin per level; the earliest loss first."
        )
        + degradation_table(ladder)
    )


def render_leaderboard(
    boards: Sequence[Board],
    protocol: Mapping[str, Any],
    shown: Sequence[Plot],
    ladder: pd.DataFrame | None = None,
) -> str:
    """The whole page for the boards of one protocol, its ladder table when it has one, and the rendered
    figures (`Plot.section`: an architecture, or `LADDER_SECTION`)."""
    name = str(protocol.get("name", ""))
    title = f"GradSUM leaderboard · {name}"
    intro = paragraph(
        f"Protocol {name}, sha256 {protocol.get('hash', '')}. Rows are ranked by their mean rank over the "
        "checks; the rank's range and the share of resamples that keep it come from the paired bootstrap "
        "over images and training seeds, as do the margins' CIs. The same tables, for a paper or a program, "
        f"are beside this page: {BOARD_MARKDOWN}, {BOARD_LATEX} and {BOARD_JSON}."
    )
    sections = [f'<section id="headlines"><h2>Headlines</h2>{headlines(boards)}</section>']
    nav = ['<a href="#headlines">Headlines</a>']
    for architecture in architectures(boards):
        anchor = f"architecture-{slug(architecture)}"
        nav.append(f'<a href="#{anchor}">{escape(architecture)}</a>')
        gallery = "".join(figure(p) for p in shown if p.section == architecture)
        parts = [f'<div class="gallery">{gallery}</div>' if gallery else ""]
        for board in boards:
            if board.architecture == architecture:
                parts.append(f"<h3>{escape(board_title(board))}</h3>")
                parts.append(paragraph(board.headline, headline_css(board)))
                parts.append(board_table(board) + agreement_lines(board))
        sections.append(f'<section id="{anchor}"><h2>{escape(architecture)}</h2>{"".join(parts)}</section>')
    if ladder is not None and not ladder.empty:
        nav.append(f'<a href="#{LADDER_SECTION}">Difficulty ladder</a>')
        body = ladder_section(ladder, shown)
        sections.append(f'<section id="{LADDER_SECTION}"><h2>Difficulty ladder</h2>{body}</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}{EXTRA_CSS}</style></head>"
        f"<body><h1>{escape(title)}</h1>{intro}<nav>{''.join(nav)}</nav>{''.join(sections)}</body></html>\n"
    )


def write_leaderboard_report(folder: str | os.PathLike[str]) -> Path:
    """Write the leaderboard folder's page (`report.html`) and each architecture's figure under plots/, and
    when the folder holds the ladder's table (`ladder.LADDER`), the ladder's section and figures.

    Everything is read and drawn in memory before any file is replaced, so a bad `leaderboard.json` (its
    error names the file) leaves the old page and figures in place.
    """
    target = Path(folder)
    boards, protocol = read_boards(target)
    drawn: dict[str, bytes] = {}
    shown = []

    def draw(fig: Figure, stem: str, section: str, caption: str) -> None:
        drawn.update({f"{stem}.{fmt}": encode(fig, fmt) for fmt, encode in FIGURE_FORMATS.items()})
        fig.clear()
        shown.append(Plot(section, caption, drawn[f"{stem}.png"]))

    for architecture in architectures(boards):
        draw(
            margin_figure(boards, architecture),
            figure_stem(architecture),
            architecture,
            figure_caption(architecture),
        )
    ladder = read_table(target, LADDER, missing_ok=True)
    if ladder is not None:
        for architecture in ladder_architectures(ladder):
            draw(
                ladder_plot(ladder, architecture),
                ladder_figure_stem(architecture),
                LADDER_SECTION,
                ladder_caption(architecture),
            )
    page = render_leaderboard(boards, protocol, shown, ladder)
    for relative, data in drawn.items():
        atomic_write_bytes(target / relative, data)
    return atomic_write_text(target / REPORT, page)
