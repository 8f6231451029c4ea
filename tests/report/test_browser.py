"""The report in a real browser: headless Chromium loads it offline with the findings and paper figure first.

Chromium is Debian's `chromium` (`.ci/run` installs it when absent); without a binary the test skips.
A copy of the page gets a probe script that, once the page has loaded, records in the DOM where the
findings table starts and the headline figure ends and every resource the page fetched (Resource Timing lists
each request the page made; data: URIs, which the report embeds, are not requests).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import MODELS, write_results

from gradsum.report import write_report

CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)
#: The first screen: a laptop browser window.
WINDOW = (1280, 900)
#: The bound on the page's size at the default run.
MAX_PAGE_BYTES = 5 * 1024 * 1024
PROBE = """<script>
window.addEventListener("load", () => {
  const edge = (selector, side) => {
    const element = document.querySelector(selector);
    return element ? element.getBoundingClientRect()[side] + window.scrollY : null;
  };
  document.body.dataset.probe = JSON.stringify({
    sections: [...document.querySelectorAll("section")].map((s) => s.id),
    findings: edge("#findings table.findings", "top"),
    figure: edge("#findings figure img", "bottom"),
    figureLoaded: [...document.querySelectorAll("#findings figure img")].every((i) => i.naturalWidth > 0),
    requests: performance.getEntriesByType("resource").map((e) => e.name),
  });
});
</script>"""


def _dump_dom(page: Path, profile: Path) -> str:
    """The DOM of `page` after load, from headless Chromium with no network and no background traffic."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # any host name the page asked for would fail to resolve: the page must not need one
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        # let the load handler run before the DOM is written out
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)")
def test_report_loads_offline_with_findings_and_paper_figure_on_the_first_screen(tmp_path: Path) -> None:
    # Two models under one method: a finding to state and a headline figure, few figures to draw.
    models = {"pilotnet": MODELS["pilotnet"], "vit": ("vit", ("gradcam",))}
    report = write_report(write_results(tmp_path / "results" / "run", models=models))
    html = report.read_text(encoding="utf-8")
    assert report.stat().st_size < MAX_PAGE_BYTES
    # Nothing in the page points at a network: every src, href and url() is local or a data: URI.
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']|url\(\s*["']?([^)"']*)""", html)
    assert [link for pair in links for link in pair if re.match(r"(https?:)?//", link)] == []
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", f"{PROBE}</body>"), encoding="utf-8")
    dom = _dump_dom(probed, tmp_path / "chromium-profile")
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, "the probe did not run: the page did not finish loading"
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["requests"] == []
    assert probe["sections"][0] == "findings" and "configuration" in probe["sections"]
    assert probe["figureLoaded"]
    assert probe["findings"] is not None and probe["figure"] is not None
    assert probe["findings"] < WINDOW[1] and probe["figure"] < WINDOW[1]
