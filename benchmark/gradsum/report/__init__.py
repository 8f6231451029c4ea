"""Report stage: read a results folder, draw the paper figures and write the self-contained HTML report.

`load_results(path)` validates a folder against its manifest and the table contract;
`write_report(path, overlays=...)` (re)writes `plots/` and `report.html`; `plots` holds the figures.
"""

from __future__ import annotations

from gradsum.report import plots
from gradsum.report.html import render_html
from gradsum.report.plots import OverlayData, save_figure
from gradsum.report.results import Results, load_results, newest_results
from gradsum.report.writer import write_report

__all__ = [
    "OverlayData",
    "Results",
    "load_results",
    "newest_results",
    "plots",
    "render_html",
    "save_figure",
    "write_report",
]
