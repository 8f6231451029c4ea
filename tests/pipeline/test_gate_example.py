"""The CI example of docs/gate.md runs as written: its workflow's gradsum commands, through the CLI, on the
example's small synthetic set. main's model is profiled and a policy proposed from three of its seed twins;
a fourth, held-out seed twin then passes the gate, and the same model trained where the sky tint agrees
with the steering sign in 99% of the training scenes (the shortcut study's series) fails it with "sky
entered the top 3"."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradsum.cli import main
from gradsum.contract import MANIFEST
from gradsum.evaluation.verdicts import FAIL
from gradsum.gate import GATE_JUNIT, GATE_SUMMARY
from gradsum.gate.calibrate import HEADER
from gradsum.models.checkpoints import read_card
from gradsum.pipeline import load_config
from gradsum.pipeline.gate import POLICY_FILE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "ci"
WORKFLOW = EXAMPLE / "gradsum-gate.yml"
DOC = ROOT / "docs" / "gate.md"
BASELINE_CONFIG = "docs/ci/baseline.yaml"
#: the shortcut study's strongest level (configs/shortcut.yaml): the tint agrees with the steering sign in
#: 99% of the training scenes
SHORTCUT = 0.99
SKY_MESSAGE = "sky entered the top 3"
#: where the sky model's training set is rendered, beside the baseline's
SKY_DATA = "datasets/gate_sky"


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return data


def command_lines(job: str) -> list[str]:
    """The gradsum command lines of a job's `run` steps, in order, as written."""
    steps = workflow()["jobs"][job]["steps"]
    lines = [line.strip() for step in steps for line in step.get("run", "").splitlines()]
    return [line for line in lines if line.startswith("gradsum ")]


def expand(line: str, env: Mapping[str, str]) -> list[str]:
    """The shell's reading of `line`: $NAME and ${NAME} from `env` (a name it lacks is a KeyError)."""
    return shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], line))


def run_job(job: str, root: Path, env: Mapping[str, str]) -> list[int]:
    """Run a job's gradsum commands in `root` through `gradsum.cli.main`; their exit codes."""
    codes = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for line in command_lines(job):
            argv = expand(line, env)
            assert argv[0] == "gradsum"
            codes.append(main(argv[1:]))
    return codes


@dataclass(frozen=True)
class Gated:
    """One candidate through the workflow's gate job: exit codes, its model folder and its gate folder."""

    codes: list[int]
    model: Path
    report: Path
    markdown: Path

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.report / GATE_SUMMARY).read_text(encoding="utf-8"))
        return data


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout's docs/ci in a fresh folder, after the workflow's baseline job (profile, calibrate)."""
    root = tmp_path_factory.mktemp("gate_example")
    shutil.copytree(EXAMPLE, root / "docs" / "ci")
    assert run_job("baseline", root, workflow()["env"]) == [0, 0]
    return root


def gate_candidate(root: Path, name: str, **changes: str) -> Gated:
    """The workflow's gate job for a candidate `name` whose spec or training set `changes` replaces."""
    env = {
        **workflow()["env"],
        "CANDIDATE_MODEL": f"models/{name}",
        "GATE_REPORT": f"gate/{name}",
        **changes,
    }
    codes = run_job("gate", root, env)
    (gate_line,) = [line for line in command_lines("gate") if line.startswith("gradsum gate ")]
    argv = expand(gate_line, env)
    markdown = root / argv[argv.index("--markdown") + 1]
    return Gated(codes, root / env["CANDIDATE_MODEL"], root / env["GATE_REPORT"], markdown)


def calibration_twins() -> int:
    """How many seed twins the workflow's calibration trains (its --twins)."""
    (line,) = [line for line in command_lines("baseline") if "--calibrate" in line]
    argv = shlex.split(line)
    return int(argv[argv.index("--twins") + 1])


@pytest.fixture(scope="module")
def twin(example: Path) -> Gated:
    """The candidate spec retrained with a seed none of the calibration's twins used."""
    env = workflow()["env"]
    spec = yaml.safe_load((example / env["CANDIDATE_SPEC"]).read_text(encoding="utf-8"))
    spec["train"]["seed"] += calibration_twins() + 1
    (example / "twin.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return gate_candidate(example, "twin", CANDIDATE_SPEC="twin.yaml")


@pytest.fixture(scope="module")
def sky(example: Path) -> Gated:
    """The candidate spec trained on the baseline's scenes rendered with the sky shortcut in train."""
    generate = load_config(str(example / BASELINE_CONFIG)).truthset.generate
    assert generate is not None
    data = example / SKY_DATA
    size = "x".join(map(str, generate.size))
    rendered = ["generate", "--out", str(data), "--count", str(generate.count), "--seed", str(generate.seed)]
    assert main([*rendered, "--size", size, "--shortcut", str(SHORTCUT)]) == 0
    return gate_candidate(example, "sky", CANDIDATE_DATA=SKY_DATA)


def test_the_doc_shows_the_workflows_commands() -> None:
    doc = DOC.read_text(encoding="utf-8")
    lines = command_lines("baseline") + command_lines("gate")
    assert [line.split()[:2] for line in lines] == [
        ["gradsum", "run"],
        ["gradsum", "gate"],
        ["gradsum", "train"],
        ["gradsum", "gate"],
    ]
    assert [line for line in lines if line not in doc] == []


def test_the_cache_carries_what_the_gate_job_reads() -> None:
    config = load_config(str(ROOT / BASELINE_CONFIG))
    jobs = workflow()["jobs"]
    saved, restored = (
        next(
            [line.strip() for line in step["with"]["path"].splitlines()]
            for step in jobs[job]["steps"]
            if "cache" in step.get("uses", "")
        )
        for job in ("baseline", "gate")
    )
    assert saved == restored
    assert {config.truthset.path, config.models_dir} <= set(saved)
    assert {"${{ env.BASELINE }}", f"${{{{ env.CALIBRATION }}}}/{POLICY_FILE}"} <= set(saved)
    # the candidate is trained on the truth set the baseline was profiled on
    assert workflow()["env"]["CANDIDATE_DATA"] == config.truthset.path


def test_the_policy_is_the_calibrations_proposal(example: Path) -> None:
    env = workflow()["env"]
    text = (example / env["CALIBRATION"] / POLICY_FILE).read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"# {HEADER}"
    checks = yaml.safe_load(text)["checks"]
    # the baseline and every twin keep the sky out of their top 3: the proposal guards it
    top_k = [entry for entry in checks if entry["check"] == "top_k"]
    assert top_k and all("sky" in entry["keep_out"] for entry in top_k)
    # the baseline ran without a trust layer: no verdict to compare
    assert "verdict" not in {entry["check"] for entry in checks}
    manifest = json.loads((example / env["BASELINE"] / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["config"]["name"] == "gate-baseline"


def r2(model: Path) -> float:
    """The test-split R² on a model folder's card."""
    value = read_card(model).metrics["r2"]
    assert value is not None
    return value


def test_the_models_learnt_to_steer(example: Path, twin: Gated, sky: Gated) -> None:
    config = load_config(str(example / BASELINE_CONFIG))
    baseline = r2(example / config.models_dir / config.models[0].name)
    assert baseline > 0.9 and r2(twin.model) > 0.85
    # the sky model leans on the tint: its fair test scenes (half of them disagreeing) cost it R²
    assert r2(sky.model) < baseline - 0.1
    manifest = json.loads((example / SKY_DATA / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["splits"]["train"]["shortcut_agreement"] == pytest.approx(SHORTCUT, abs=0.02)
    assert manifest["splits"]["test"]["shortcut"] == 0.0


def test_a_retrained_seed_twin_passes(twin: Gated) -> None:
    assert twin.codes == [0, 0]
    summary = twin.summary
    assert summary["passed"] is True and summary["violations"] == 0
    junit = ET.parse(twin.report / GATE_JUNIT).getroot()
    assert junit.get("failures") == "0" and int(junit.get("tests", "0")) == len(summary["outcomes"])
    assert twin.markdown.is_file()


def test_the_sky_shortcut_model_fails_with_sky_in_the_top_3(sky: Gated) -> None:
    assert sky.codes == [0, 1]
    summary = sky.summary
    assert summary["passed"] is False
    top_k = [o for o in summary["outcomes"] if o["check"] == "top_k" and SKY_MESSAGE in o["message"]]
    assert [o["verdict"] for o in top_k] == [FAIL]
    (row,) = [row for row in top_k[0]["details"] if row["class"] == "sky"]
    assert row["verdict"] == FAIL and row["rank"] <= 3 < row["baseline_rank"]
    failures = [f.get("message", "") for f in ET.parse(sky.report / GATE_JUNIT).getroot().iter("failure")]
    assert any(SKY_MESSAGE in message for message in failures)
    assert SKY_MESSAGE in sky.markdown.read_text(encoding="utf-8")
