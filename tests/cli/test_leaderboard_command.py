"""`gradsum leaderboard` end to end on a tiny protocol written here (200 scenes at 48×96, one compact CNN,
two training seeds, GradCAM, its row at the layer swept on 8 validation scenes and a method added with --add, causal and
localisation on 8 images): the seeds'
manifests record the protocol, the board's margins are the seeds' own figures pooled, a second run reuses
the seeds and writes the same bytes, a 2-process `torchrun` run gives the same tables, and each bad input
is one line and exit 2."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gradsum.attribution import METHODS
from gradsum.cli import main
from gradsum.contract import (
    CRITERIA,
    CRITERIA_PER_IMAGE,
    MANIFEST,
    PLOTS,
    PROTOCOL_KEY,
    REPORT,
    TRUST,
    read_table,
)
from gradsum.evaluation.checks.granularity import GRANULARITY_TABLE
from gradsum.evaluation.verdicts import criteria_from_frame
from gradsum.leaderboard.formats import BOARD_JSON
from gradsum.leaderboard.ladder import LADDER, ladder_steps
from gradsum.leaderboard.layers import swept_label
from gradsum.leaderboard.protocol import builtin_protocols, load_protocol, protocol_hash
from gradsum.leaderboard.runner import LAYER_SWEEP_DIR

WORKFLOW = Path(__file__).resolve().parents[2] / "docs" / "ci" / "gradsum-leaderboard.yml"
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
ADDED = "red_channel"
SWEPT_GRADCAM = swept_label("gradcam")
PLUGIN = textwrap.dedent(
    f'''
    """An outside method for the leaderboard: its map is the input's red channel."""
    from gradsum.attribution import Method, register_method
    from gradsum.taxonomy import FAMILIES

    @register_method("{ADDED}")
    class RedChannel(Method):
        description = "the input's red channel"
        applies_to = frozenset(FAMILIES)
        uses_layer = False

        def grid(self, model, images, target, layer):
            return images[:, 0]
    '''
)


@dataclass(frozen=True)
class Tiny:
    """The tiny protocol's files and folders, and the arguments that run it."""

    root: Path
    protocol: Path
    plugin: Path

    def args(self, results: Path | None = None, *extra: str) -> list[str]:
        return [
            "leaderboard",
            "--protocol",
            str(self.protocol),
            "--add",
            str(self.plugin),
            "--methods",
            "gradcam",
            "--data",
            str(self.root / "data"),
            "--models",
            str(self.root / "models"),
            "--results",
            str(results or self.results),
            *extra,
        ]

    @property
    def results(self) -> Path:
        return self.root / "results"

    def seed_folder(self, seed: int, results: Path | None = None) -> Path:
        return (results or self.results) / f"tiny-seed{seed}"

    def board(self, results: Path | None = None) -> Path:
        return (results or self.results) / "tiny" / BOARD_JSON


def tiny_protocol() -> dict[str, object]:
    data = yaml.safe_load(builtin_protocols().get("synth-v1").read_text())
    # one knob of the difficulty ladder: the models train on a mix of camera levels, and the first training
    # seed's models are judged again on the evaluated scenes at camera level 3
    data["generator"]["mix"] = ["camera"]
    data["ladder"] = {
        "knobs": ["camera"],
        "levels": [3],
        "evaluated_images": 8,
        "checks": ["causal", "localisation"],
        "training_seeds": [0],
    }
    data.update(
        name="tiny",
        generator={**data["generator"], "count": 200, "size": [48, 96]},
        attributed_images=8,
        evaluated_images=8,
        training_seeds=[0, 2],
        models=[
            {
                "name": "cnn",
                "spec": "compact_cnn",
                "task": "steering",
                "overrides": {
                    "task": "steering",
                    "img_size": [48, 96],
                    "train": {"epochs": 1, "batch_size": 32},
                },
            }
        ],
        checks={"causal": {"filler": "inpaint"}, "localisation": {}, "granularity": {"methods": ["gradcam"]}},
        layer_sweep={"split": "val", "images": 8},
        bootstrap_resamples=50,
        verdict_resamples=200,
    )
    return data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiny]:
    """The tiny protocol run once in this process (renders the set and trains both seeds' models)."""
    root = tmp_path_factory.mktemp("leaderboard")
    protocol = root / "tiny.yaml"
    protocol.write_text(yaml.safe_dump(tiny_protocol()), encoding="utf-8")
    plugin = root / "red_channel.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    workspace = Tiny(root, protocol, plugin)
    try:
        assert main(workspace.args()) == 0
        yield workspace
    finally:
        if ADDED in METHODS:
            sys.modules.pop(METHODS.unregister(ADDED).__module__, None)


def test_each_seed_records_the_protocol_and_the_board_pools_its_figures(tiny: Tiny) -> None:
    protocol = load_protocol(tiny.protocol)
    expected = protocol_hash(protocol)
    for seed in (0, 2):
        manifest = json.loads((tiny.seed_folder(seed) / MANIFEST).read_text())
        assert manifest[PROTOCOL_KEY] == expected
        assert [m["method"] for m in manifest["methods"]] == ["gradcam", ADDED, "gradcam"]

    assert (tiny.board().parent / REPORT).is_file()
    written = json.loads(tiny.board().read_text())
    assert written["protocol"] == {"name": "tiny", "hash": expected}
    [board] = written["boards"]
    assert (board["model"], board["architecture"], board["task"], board["seeds"]) == (
        "cnn",
        "cnn",
        "steering",
        [0, 2],
    )
    # every row of the seeds' trust tables is ranked: the two methods, the nulls and the controls
    trust = {seed: read_table(tiny.seed_folder(seed), TRUST).set_index("method") for seed in (0, 2)}
    assert {row["method"] for row in board["rows"]} == set(trust[0].index) == set(trust[2].index)
    assert {"gradcam", ADDED, SWEPT_GRADCAM, "null:random", "control:oracle"} <= set(trust[0].index)

    # the oracle: a margin is the row's figure minus its null's, each the plain mean of the seeds' own
    # figures (the trust tables'), signed so that positive is better
    criteria = {c.key: c for c in criteria_from_frame(read_table(tiny.seed_folder(0), CRITERIA))}
    checked = 0
    for row in board["rows"]:
        for key, figures in row["criteria"].items():
            null = figures["margin_null"]
            if not null or figures["margin"] is None:
                continue
            sign = 1.0 if criteria[key].higher_is_better else -1.0
            pooled = [sum(trust[s].loc[label, key] for s in (0, 2)) / 2 for label in (row["method"], null)]
            assert math.isclose(
                figures["margin"], sign * (pooled[0] - pooled[1]), rel_tol=1e-9, abs_tol=1e-12
            )
            checked += 1
    assert checked >= len(board["rows"])


def test_the_swept_row_runs_at_the_layer_with_the_best_validation_agreement(tiny: Tiny) -> None:
    for seed in (0, 2):
        sweep = read_table(tiny.board().parent / LAYER_SWEEP_DIR / f"seed{seed}", GRANULARITY_TABLE)
        # the sweep ran on the validation split's first 8 scenes, at every depth of the compact CNN
        assert set(sweep["model"]) == {f"cnn_s{seed}"} and set(sweep["n_images"]) == {8}
        assert sweep["depth"].tolist() == list(range(len(sweep))) and len(sweep) > 1
        best = sweep.sort_values(["agreement", "depth"], ascending=False).iloc[0]["layer"]
        manifest = json.loads((tiny.seed_folder(seed) / MANIFEST).read_text())
        [entry] = [m for m in manifest["methods"] if m["label"] == SWEPT_GRADCAM]
        assert (entry["layer"], entry["models"]) == (best, [f"cnn_s{seed}"])
    rows = json.loads(tiny.board().read_text())["boards"][0]["rows"]
    assert SWEPT_GRADCAM in {row["method"] for row in rows}


def test_the_ladder_judges_the_first_seeds_models_at_each_level(tiny: Tiny) -> None:
    folder = tiny.board().parent
    ladder = read_table(folder, LADDER)
    # the clean run stands at level 0; camera level 3 is the one step; seed 0's model only
    assert sorted(set(zip(ladder["knob"], ladder["level"], strict=True))) == [("camera", 0), ("camera", 3)]
    assert set(ladder["model"]) == {"cnn"} and set(ladder["seed"]) == {0}
    assert {"gradcam", SWEPT_GRADCAM, "null:random"} <= set(ladder["method"])
    # the swept row at the layer seed 0's sweep picked, the one its board row ran at
    seed_manifest = json.loads((tiny.seed_folder(0) / MANIFEST).read_text())
    [picked] = [m for m in seed_manifest["methods"] if m["label"] == SWEPT_GRADCAM]
    for step in ("clean", "camera3"):
        manifest = json.loads((tiny.results / f"tiny-ladder-{step}-seed0" / MANIFEST).read_text())
        assert [m for m in manifest["methods"] if m["label"] == SWEPT_GRADCAM] == [picked]
    assert (folder / PLOTS / "ladder_cnn.png").is_file()
    assert "ladder" in (folder / REPORT).read_text().lower()


def test_a_second_run_reuses_the_seeds_and_writes_the_same_bytes(tiny: Tiny) -> None:
    manifests = {seed: (tiny.seed_folder(seed) / MANIFEST).read_bytes() for seed in (0, 2)}
    board = tiny.board().read_bytes()
    assert main(tiny.args()) == 0
    # reused, not run again: a run would record other start and finish times
    assert {seed: (tiny.seed_folder(seed) / MANIFEST).read_bytes() for seed in (0, 2)} == manifests
    assert tiny.board().read_bytes() == board
    assert main(tiny.args(None, "--assemble-only")) == 0
    assert tiny.board().read_bytes() == board


def workflow_commands(job: str, **values: str) -> list[list[str]]:
    """The gradsum command lines of one job of the CI example, `${{ matrix.NAME }}` and `$NAME` filled in
    from `values` (a name it lacks is a KeyError), without the leading `gradsum`."""
    steps = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"][job]["steps"]
    lines = [line.strip() for step in steps for line in step.get("run", "").splitlines()]
    fill = re.compile(r"\$\{\{ *matrix\.(\w+) *\}\}|\$\{?(\w+)\}?")
    return [
        shlex.split(fill.sub(lambda m: values[m.group(1) or m.group(2)], line))[1:]
        for line in lines
        if line.startswith("gradsum ")
    ]


def test_the_ci_example_one_job_per_seed_and_ladder_step_then_ranking_gives_the_one_call_tables(
    tiny: Tiny,
) -> None:
    # docs/ci/gradsum-leaderboard.yml's commands as written, on the tiny protocol: each training seed's job,
    # each ladder step's job, then the ranking job; models are reused, every result made afresh
    results = tiny.root / "steps"
    where = tiny.args(results)[3:]  # --add, --methods, --data, --models, --results of this test
    protocol = load_protocol(tiny.protocol)
    for seed in protocol.training_seeds:
        [command] = workflow_commands("seed", seed=str(seed), PROTOCOL=str(tiny.protocol))
        assert main([*command, *where]) == 0
    assert not list(results.glob("tiny-ladder-*")), "a seed's job ran a ladder step"
    seed_zero = (tiny.seed_folder(0, results) / MANIFEST).read_bytes()
    steps = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"]["ladder"]["strategy"]["matrix"][
        "step"
    ]
    # the workflow's matrix names every step of synth-v1's ladder; the tiny protocol's are a subset
    assert steps == ladder_steps(load_protocol("synth-v1"))
    for step in ladder_steps(protocol):
        [command] = workflow_commands("ladder", step=step, PROTOCOL=str(tiny.protocol))
        assert main([*command, *where]) == 0
        assert len(list(results.glob(f"tiny-ladder-{step}*-seed0"))) == 1
    # the ladder's jobs reuse the first seed's results
    assert (tiny.seed_folder(0, results) / MANIFEST).read_bytes() == seed_zero
    [command] = workflow_commands("rank", PROTOCOL=str(tiny.protocol))
    assert main([*command, *where]) == 0
    assert tiny.board(results).read_bytes() == tiny.board().read_bytes()
    assert read_table(tiny.board(results).parent, LADDER).equals(read_table(tiny.board().parent, LADDER))


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is installed with torch")
def test_two_processes_give_the_one_process_tables(tiny: Tiny) -> None:
    # seed 0's folder is copied, so under torchrun it is reused (every rank must agree) and seed 2 runs
    results = tiny.root / "two"
    shutil.copytree(tiny.seed_folder(0), tiny.seed_folder(0, results))
    assert TORCHRUN is not None
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "gradsum", *tiny.args(results)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 of 2 joined (gloo)" in done.stderr

    two = tiny.seed_folder(2, results)
    assert '"processes": 2' in (two / MANIFEST).read_text()
    for schema in (CRITERIA, CRITERIA_PER_IMAGE):
        pd.testing.assert_frame_equal(read_table(two, schema), read_table(tiny.seed_folder(2), schema))
    assert tiny.board(results).read_bytes() == tiny.board().read_bytes()


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gradsum leaderboard: error: ")
    return lines[0]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(yaml.safe_dump(tiny_protocol()), encoding="utf-8")
    base = ["leaderboard", "--protocol", str(protocol), "--results", str(tmp_path / "results")]
    base += ["--models", str(tmp_path / "models")]
    empty = tmp_path / "empty.py"
    empty.write_text("VALUE = 1\n", encoding="utf-8")

    assert main(["leaderboard", "--protocol", "nope"]) == 2
    assert "unknown protocol 'nope' for --protocol" in error_line(capsys)
    assert main([*base, "--add", str(empty)]) == 2
    assert f"--add {empty}: registers no attribution method" in error_line(capsys)
    assert main([*base, "--seeds", "1"]) == 2
    assert "--seeds: [1]; need distinct training seeds of protocol tiny: [0, 2]" in error_line(capsys)
    assert main([*base, "--methods", "null:random"]) == 2
    assert "--methods: null:random not scored by protocol tiny" in error_line(capsys)
    assert main([*base, "--ladder", "fog"]) == 2
    assert "--ladder: fog not a step of protocol tiny's ladder; valid: clean, camera" in error_line(capsys)

    # a data folder rendered otherwise than the protocol says: refused naming its manifest, nothing runs
    data = tmp_path / "data"
    data.mkdir()
    rendered = {"count": 7, "seed": 0, "size": [48, 96], "shortcut": 0.0}
    (data / MANIFEST).write_text(json.dumps({"kind": "synthetic", "parameters": rendered}), encoding="utf-8")
    base += ["--data", str(data)]
    assert main([*base, "--methods", "gradcam"]) == 2
    line = error_line(capsys)
    assert f"{data / MANIFEST}: this set was rendered with count 7 (config: 200)" in line
    assert "not as the protocol says" in line
    assert not (tmp_path / "results").exists()
    (data / MANIFEST).unlink()

    # a results folder of another protocol in the way: refused before anything runs, never overwritten
    other = tmp_path / "results" / "tiny-seed0"
    other.mkdir(parents=True)
    (other / MANIFEST).write_text(json.dumps({PROTOCOL_KEY: "0" * 64}), encoding="utf-8")
    assert main([*base, "--methods", "gradcam"]) == 2
    assert f"{other / MANIFEST}: protocol hash {'0' * 64} under 'protocol'" in error_line(capsys)
    assert not (tmp_path / "models").exists() and list(data.iterdir()) == []
    assert main([*base, "--assemble-only", "--seeds", "0"]) == 2
    assert f"{other / MANIFEST}: protocol hash {'0' * 64}, but protocol tiny hashes to" in error_line(capsys)
