"""The difficulty ladder's runs, table, summary and figure: configs checked field by field, the ladder sets
rendered from them holding the clean run's scenes, and the table read back from results folders whose trust
tables, criteria and causal outputs are written by hand."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg

from gradsum.contract import CRITERIA, MANIFEST, PLOTS, PROTOCOL_KEY, TRUST, read_table, write_table
from gradsum.errors import ResultsError, SpecError
from gradsum.evaluation.checks.causal import CAUSAL_EFFECTS_TABLE
from gradsum.evaluation.nulls import PRIOR_SCENES, PRIOR_SPLIT, mean_cause_mask
from gradsum.evaluation.planned import CHANCE, CONTROL, METHOD
from gradsum.evaluation.verdicts import FAIL, INCONCLUSIVE, PASS
from gradsum.leaderboard.ladder import (
    CLEAN,
    LADDER,
    LADDER_SUMMARY,
    REFERENCE,
    REFERENCE_LABEL,
    LadderRun,
    ladder_configs,
    ladder_count,
    ladder_figure,
    ladder_plot,
    ladder_steps,
    ladder_summary,
    ladder_table,
    select_ladder,
    write_ladder,
)
from gradsum.leaderboard.protocol import (
    Protocol,
    builtin_protocols,
    load_protocol,
    protocol_from_dict,
    protocol_hash,
)
from gradsum.pipeline import run
from gradsum.pipeline.inputs import ensure_truthset
from gradsum.truthsets import open_truthset

SEEDS = (0, 2)


def tiny_protocol(ladder_seeds: tuple[int, ...] = (0,)) -> Protocol:
    data = yaml.safe_load(builtin_protocols().get("synth-v1").read_text())
    data["name"] = "tiny"
    data["generator"].update(count=40, size=[32, 64])
    data["layer_sweep"]["images"] = 4
    data["models"] = [m for m in data["models"] if m["name"] in ("pilotnet", "compact_cnn")]
    data["training_seeds"] = list(SEEDS)
    data["evaluated_images"] = 4
    data["ladder"] = {
        "knobs": ["shadows", "camera"],
        "levels": [1, 3],
        "evaluated_images": 3,
        "checks": ["localisation", "causal"],
        "training_seeds": list(ladder_seeds),
    }
    return protocol_from_dict(data, "tiny")


def runs_by_step(runs: list[LadderRun]) -> dict[tuple[str, int, int], LadderRun]:
    return {(run.knob, run.level, run.seed): run for run in runs}


def test_ladder_configs_narrow_each_seeds_run_to_the_ladder(tmp_path: Path) -> None:
    protocol = tiny_protocol(ladder_seeds=(2, 0))
    data = str(tmp_path / "data" / "tiny")
    runs = ladder_configs(protocol, [{"method": "gradcam"}], data, "models/tiny", "out")
    steps = [(r.knob, r.level, r.seed) for r in runs]
    expected = [(CLEAN, 0), ("shadows", 1), ("shadows", 3), ("camera", 1), ("camera", 3)]
    assert steps == [(k, lv, s) for s in (2, 0) for k, lv in expected]
    by_step = runs_by_step(runs)
    clean, hard = by_step[(CLEAN, 0, 2)].config, by_step[("camera", 3, 2)].config
    assert (clean.name, hard.name) == ("tiny-ladder-clean-seed2", "tiny-ladder-camera3-seed2")
    # the clean run reads the protocol's own (mixed) set; a level's run its own set of the split alone
    assert clean.truthset.path == data and hard.truthset.path == str(tmp_path / "data" / "tiny-camera3")
    mixed = clean.truthset.generate
    assert mixed is not None and mixed.mix == protocol.generator.mix and not mixed.difficulty
    assert hard.truthset.generate == dataclasses.replace(
        mixed, count=40, difficulty=("camera=3",), only=("train", "test")
    )
    for config in (clean, hard):
        assert config.truthset.limit == 3 and config.evaluation.images == 3
        assert config.evaluation.checks == ("causal", "localisation")
        assert set(config.evaluation.options) == {"causal", "localisation"}
        assert config.protocol == protocol_hash(protocol)
        assert [m.name for m in config.models] == ["pilotnet_s2", "compact_cnn_s2"]
        # a missing model trains on the mixed set with the seed's budget, as the leaderboard's run trains it
        assert all(
            m.train_on is not None and m.train_on.path == data and m.train_on.generate == mixed
            for m in config.models
        )
        assert all(m.overrides["train"]["seed"] == 2 for m in config.models)
        assert config.models_dir == "models/tiny" and config.results_dir == "out"
        assert [p.method for p in config.methods] == ["gradcam"]


def test_a_levels_set_holds_the_ladders_images_and_the_priors_scenes_and_no_more() -> None:
    synth = load_protocol("synth-v1")
    assert synth.ladder is not None and synth.ladder.evaluated_images == 100 and PRIOR_SCENES == 300
    # by hand: 995 scenes split 795 / 100 / 100 (round(99.5) = 100); 994 leaves test 99
    assert ladder_count(synth) == 995
    # ten images: the prior's 300 training scenes decide; 374 splits 300 / 37 / 37, 373 leaves train 299
    assert (
        ladder_count(
            dataclasses.replace(synth, ladder=dataclasses.replace(synth.ladder, evaluated_images=10))
        )
        == 374
    )
    # a set smaller than that: as many training scenes as it has (tiny: 40 scenes, train 32)
    assert ladder_count(tiny_protocol()) == 40


def test_a_protocol_without_a_ladder_has_no_ladder_runs() -> None:
    protocol = dataclasses.replace(tiny_protocol(), ladder=None)
    with pytest.raises(SpecError, match="protocol tiny: has no ladder section"):
        ladder_configs(protocol)


def split_files(root: Path, split: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and f"/{split}/" in str(p)
    }


def test_a_ladder_is_selected_by_step_and_an_unknown_step_lists_the_valid_ones() -> None:
    protocol = tiny_protocol(ladder_seeds=(2, 0))
    runs = ladder_configs(protocol, [{"method": "gradcam"}])
    assert ladder_steps(protocol) == [CLEAN, "shadows", "camera"]
    assert select_ladder(protocol, runs, None) == runs
    assert select_ladder(protocol, runs, []) == []
    chosen = select_ladder(protocol, runs, ["camera", CLEAN])
    assert [(r.knob, r.level, r.seed) for r in chosen] == [
        (k, lv, s) for s in (2, 0) for k, lv in [(CLEAN, 0), ("camera", 1), ("camera", 3)]
    ]
    with pytest.raises(
        SpecError,
        match="--ladder: fog, weather not a step of protocol tiny's ladder; valid: clean, shadows, camera",
    ):
        select_ladder(protocol, runs, ["fog", "camera", "weather"])


@pytest.mark.parametrize("knob", ["shadows", "occlusion"])
def test_a_levels_set_holds_the_mixed_training_scenes_and_the_test_scenes_at_the_level(
    tmp_path: Path, knob: str
) -> None:
    protocol = tiny_protocol()
    assert protocol.ladder is not None
    protocol = dataclasses.replace(
        protocol, ladder=dataclasses.replace(protocol.ladder, knobs=(knob,), levels=(3,))
    )
    runs = runs_by_step(ladder_configs(protocol, truthset_path=str(tmp_path / "tiny")))
    clean_root = ensure_truthset(runs[(CLEAN, 0, 0)].config)
    hard_root = ensure_truthset(runs[(knob, 3, 0)].config)
    assert sorted(json.loads((hard_root / MANIFEST).read_text())["splits"]) == ["test", "train"]
    # the training scenes are the mixed set's own, byte for byte: the positional prior averages the same
    # cause masks at every level, so every level is judged against the same nulls
    assert split_files(hard_root, PRIOR_SPLIT) == split_files(clean_root, PRIOR_SPLIT)
    for task in ("steering", "obstacle"):
        np.testing.assert_array_equal(
            mean_cause_mask(open_truthset(hard_root, PRIOR_SPLIT), task),
            mean_cause_mask(open_truthset(clean_root, PRIOR_SPLIT), task),
        )
    clean, hard = open_truthset(clean_root, "test"), open_truthset(hard_root, "test")
    assert len(hard) == len(clean) == 4
    for index in range(len(hard)):
        assert hard[index].targets == clean[index].targets
        assert not np.array_equal(hard[index].image, clean[index].image)
    # an image knob keeps every label; a scene knob adds objects to the same scenes
    same_labels = [np.array_equal(hard[i].labels, clean[i].labels) for i in range(len(hard))]
    assert all(same_labels) if knob == "shadows" else not all(same_labels)


# ----- the table, from hand-written results folders -----

MODELS = {"pilotnet_s0": "steering", "compact_cnn_s0": "obstacle"}
#: (model, method, role) → knob level → (figure, margin, verdict); the clean run is level 0
ROWS: dict[tuple[str, str, str], dict[int, tuple[float, float, str]]] = {
    ("pilotnet_s0", "gradcam", METHOD): {0: (0.8, 0.3, PASS), 1: (0.7, 0.2, PASS), 3: (0.4, -0.1, FAIL)},
    ("pilotnet_s0", "saliency", METHOD): {
        0: (0.6, 0.1, INCONCLUSIVE),
        1: (0.6, 0.1, INCONCLUSIVE),
        3: (0.5, 0.0, INCONCLUSIVE),
    },
    ("pilotnet_s0", "control:oracle", CONTROL): {
        0: (1.0, 0.5, PASS),
        1: (1.0, 0.5, PASS),
        3: (1.0, 0.5, PASS),
    },
    ("pilotnet_s0", "null:random", CHANCE): {0: (0.5, 0.0, FAIL), 1: (0.5, 0.0, FAIL), 3: (0.5, 0.0, FAIL)},
    ("pilotnet_s0_seed1", "gradcam", METHOD): {0: (0.9, 0.4, PASS), 1: (0.9, 0.4, PASS), 3: (0.9, 0.4, PASS)},
    ("compact_cnn_s0", "gradcam", METHOD): {0: (0.7, 0.2, PASS), 1: (0.6, 0.1, FAIL), 3: (0.6, 0.1, FAIL)},
}
KEY = "localisation"
IMAGES = ("im0", "im1", "im2")
#: model → level → (outputs per image); targets per image below
OUTPUTS = {
    "pilotnet_s0": {0: (0.1, 0.2, 0.3), 1: (0.1, 0.1, 0.4), 3: (0.0, 0.0, 0.0)},
    "compact_cnn_s0": {0: (2.0, -1.0, 3.0), 1: (2.0, 1.0, -3.0), 3: (-2.0, -1.0, -3.0)},
}
TARGETS = {"steering": (0.1, 0.2, 0.4), "obstacle": (1.0, 0.0, 1.0)}


def hand_r2(outputs: tuple[float, ...], targets: tuple[float, ...]) -> float:
    mean = sum(targets) / len(targets)
    residual = sum((o - t) ** 2 for o, t in zip(outputs, targets, strict=True))
    return 1.0 - residual / sum((t - mean) ** 2 for t in targets)


def hand_accuracy(logits: tuple[float, ...], targets: tuple[float, ...]) -> float:
    return sum((logit > 0) == (t > 0.5) for logit, t in zip(logits, targets, strict=True)) / len(targets)


class FakeTruthSet:
    """The three images' ids and targets, as `open_truthset` gives them."""

    def __len__(self) -> int:
        return len(IMAGES)

    def __getitem__(self, index: int) -> Any:
        targets = {task: values[index] for task, values in TARGETS.items()}
        return type("Sample", (), {"meta": {"frame": IMAGES[index]}, "targets": targets})()


def results_folder(root: Path, run: LadderRun, protocol_hash_value: str) -> Path:
    folder = root / run.config.name
    folder.mkdir(parents=True)
    manifest = {"config": dataclasses.asdict(run.config), PROTOCOL_KEY: protocol_hash_value, "files": {}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    trust = pd.DataFrame(
        [
            {
                "model": model,
                "method": method,
                "role": role,
                "null": role == CHANCE,
                "verdict": levels[run.level][2],
                "failed": "",
                "summary": "",
                KEY: levels[run.level][0],
                f"{KEY}_margin": levels[run.level][1],
                f"{KEY}_margin_ci_low": levels[run.level][1] - 0.05,
                f"{KEY}_margin_ci_high": levels[run.level][1] + 0.05,
                f"{KEY}_margin_null": "null:random",
                f"{KEY}_verdict": levels[run.level][2],
            }
            for (model, method, role), levels in ROWS.items()
        ]
    )
    write_table(folder, TRUST, trust)
    criteria = {"key": KEY, "check": KEY, "column": KEY, "denominator": "", "over": "images", "text": ""}
    flags = {"higher_is_better": True, "against_nulls": True, "evidence": True, "threshold": math.nan}
    write_table(folder, CRITERIA, pd.DataFrame([{**criteria, **flags}]))
    effects = [
        {
            "model": model,
            "task": MODELS[model],
            "image": image,
            "class": cls,
            "class_id": class_id,
            "pixels": 10,
            "output": levels[run.level][i],
        }
        for model, levels in OUTPUTS.items()
        for i, image in enumerate(IMAGES)
        for cls, class_id in (
            ("road", 7),
            ("sky", 23),
        )  # a row per erased class, each with the image's output
    ]
    frame = pd.DataFrame(effects).reindex(columns=[name for name, _ in CAUSAL_EFFECTS_TABLE.columns])
    write_table(folder, CAUSAL_EFFECTS_TABLE, frame)
    return folder


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setattr("gradsum.leaderboard.ladder.open_truthset", lambda path, split: FakeTruthSet())
    protocol = tiny_protocol()
    runs = [r for r in ladder_configs(protocol) if r.knob in (CLEAN, "shadows")]
    return [results_folder(tmp_path / "results", run, protocol_hash(protocol)) for run in runs]


def test_the_table_holds_each_rows_margin_and_verdict_per_level(folders: list[Path]) -> None:
    table = ladder_table(folders)
    assert list(table.columns) == list(LADDER.names)
    # the twin is no protocol model's row; the clean run stands at level 0 of the one knob run
    assert set(table["model"]) == {"pilotnet", "compact_cnn"} and set(table["knob"]) == {"shadows"}
    assert set(table["seed"]) == {0} and set(table["criterion"]) == {KEY}
    for (model, method, role), levels in ROWS.items():
        if model.endswith("_seed1"):
            continue
        rows = table[(table["model"] == model.removesuffix("_s0")) & (table["method"] == method)]
        assert list(rows["level"]) == [0, 1, 3] and set(rows["role"]) == {role}
        assert list(rows["figure"]) == [levels[lv][0] for lv in (0, 1, 3)]
        assert list(rows["margin"]) == [levels[lv][1] for lv in (0, 1, 3)]
        assert list(rows["margin_ci_low"]) == pytest.approx([levels[lv][1] - 0.05 for lv in (0, 1, 3)])
        assert list(rows["verdict"]) == [levels[lv][2] for lv in (0, 1, 3)]
        assert set(rows["margin_null"]) == {"null:random"}
    assert set(table.loc[table["model"] == "pilotnet", "architecture"]) == {"cnn"}
    assert set(table.loc[table["model"] == "compact_cnn", "task"]) == {"obstacle"}


def test_the_table_holds_the_task_metric_per_level(folders: list[Path]) -> None:
    table = ladder_table(folders).drop_duplicates(["model", "level"]).set_index(["model", "level"])
    for level in (0, 1, 3):
        steer = table.loc[("pilotnet", level)]
        assert steer["metric"] == "r2"
        assert steer["metric_value"] == pytest.approx(
            hand_r2(OUTPUTS["pilotnet_s0"][level], TARGETS["steering"])
        )
        obstacle = table.loc[("compact_cnn", level)]
        assert obstacle["metric"] == "accuracy"
        assert obstacle["metric_value"] == hand_accuracy(
            OUTPUTS["compact_cnn_s0"][level], TARGETS["obstacle"]
        )
    # by hand: accuracy 1.0 clean, 1/3 at level 1, 1/3 at level 3
    assert list(table.loc["compact_cnn", "metric_value"]) == pytest.approx([1.0, 1 / 3, 1 / 3])


def test_the_clean_run_stands_at_level_zero_of_every_knob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gradsum.leaderboard.ladder.open_truthset", lambda path, split: FakeTruthSet())
    protocol = tiny_protocol()
    runs = [r for r in ladder_configs(protocol) if r.level in (0, 1)]
    table = ladder_table([results_folder(tmp_path, run, protocol_hash(protocol)) for run in runs])
    gradcam = table[(table["model"] == "pilotnet") & (table["method"] == "gradcam")]
    assert list(zip(gradcam["knob"], gradcam["level"], strict=True)) == [
        ("camera", 0),
        ("camera", 1),
        ("shadows", 0),
        ("shadows", 1),
    ]


def test_folders_of_two_protocols_are_refused(folders: list[Path]) -> None:
    manifest = json.loads((folders[1] / MANIFEST).read_text())
    manifest[PROTOCOL_KEY] = "ff" * 32
    (folders[1] / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ResultsError, match=f"{folders[1] / MANIFEST}: protocol hash {'ff' * 32}"):
        ladder_table(folders)


def test_a_folder_of_two_knobs_at_once_is_no_ladder_run(folders: list[Path]) -> None:
    manifest = json.loads((folders[1] / MANIFEST).read_text())
    manifest["config"]["truthset"]["generate"]["difficulty"] = ["shadows=1", "camera=2"]
    (folders[1] / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ResultsError, match=r"difficulty sets 2 knobs; a ladder run sets one knob or none"):
        ladder_table(folders)


def test_the_summary_says_where_a_verdict_is_lost_and_how_fast_the_margin_falls(folders: list[Path]) -> None:
    summary = ladder_summary(ladder_table(folders)).set_index(["model", "method"])
    assert list(summary.columns) == [c for c in LADDER_SUMMARY.names if c not in ("model", "method")]
    gradcam = summary.loc[("pilotnet", "gradcam")]
    assert gradcam["clean_verdict"] == PASS and gradcam["lost_at"] == 3.0
    # least squares through (0, 0.3), (1, 0.2), (3, -0.1): slope = Sxy / Sxx with mean level 4/3
    levels, margins = np.array([0.0, 1.0, 3.0]), np.array([0.3, 0.2, -0.1])
    hand = ((levels - 4 / 3) * (margins - margins.mean())).sum() / ((levels - 4 / 3) ** 2).sum()
    assert gradcam["slope"] == pytest.approx(hand) and hand == pytest.approx(-0.1357142857)
    assert math.isnan(summary.loc[("pilotnet", "saliency"), "lost_at"])
    assert summary.loc[("compact_cnn", "gradcam"), "lost_at"] == 1.0


def test_the_figure_and_tables_are_written_and_repeat_byte_for_byte(
    folders: list[Path], tmp_path: Path
) -> None:
    table = ladder_table(folders)
    first = write_ladder(tmp_path / "board", table)
    names = sorted(p.relative_to(tmp_path / "board").as_posix() for p in first)
    assert names == ["ladder.csv", "ladder_summary.csv", f"{PLOTS}/ladder_cnn.pdf", f"{PLOTS}/ladder_cnn.png"]
    before = {p: p.read_bytes() for p in first}
    write_ladder(tmp_path / "board", table)
    assert {p: p.read_bytes() for p in first} == before
    pd.testing.assert_frame_equal(read_table(tmp_path / "board", LADDER), table, check_dtype=False)
    with pytest.raises(ResultsError, match="ladder: no method rows for architecture 'vit'"):
        ladder_figure(table, "vit", tmp_path / "vit")


def test_the_figure_keeps_forty_five_methods_apart_beside_the_oracle_and_its_legend_inside(
    folders: list[Path],
) -> None:
    table = ladder_table(folders)
    # more methods than any palette has colours, as a real architecture scores
    gradcam = table[table["method"] == "gradcam"]
    names = [f"method{i:02d}" for i in range(45)]
    many = pd.concat([*(gradcam.assign(method=name) for name in names), table[table["role"] != METHOD]])
    fig = ladder_plot(many, "cnn")
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    legend = fig.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == [*names, REFERENCE_LABEL]
    handles = legend.legend_handles[: len(names)]
    assert len({(tuple(h.get_color()), h.get_marker()) for h in handles}) == len(names)
    box = legend.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1
    # the oracle's line stands in pilotnet's panel at its margins (0.5 at every level), not in compact_cnn's
    # (whose runs did not score it)
    oracle = {ax.get_title(): c for ax in fig.axes for c in ax.containers if c.get_label() == REFERENCE_LABEL}
    assert list(oracle) == [f"pilotnet: {KEY}\nshadows"]
    np.testing.assert_allclose(oracle[f"pilotnet: {KEY}\nshadows"].lines[0].get_ydata(), [0.5, 0.5, 0.5])
    assert REFERENCE == "control:oracle"


@pytest.mark.slow
def test_ladder_runs_through_the_pipeline_judge_every_level_against_the_same_nulls(tmp_path: Path) -> None:
    data = yaml.safe_load(builtin_protocols().get("synth-v1").read_text())
    data.update(name="tiny", training_seeds=[0], evaluated_images=4)
    data["generator"].update(count=60, size=[48, 96])
    data["models"] = [m for m in data["models"] if m["name"] == "pilotnet"]
    data["models"][0]["overrides"]["train"]["epochs"] = 1
    data["checks"] = {"causal": {"filler": "inpaint"}, "localisation": {}}
    del data["layer_sweep"]  # the ladder runs the default layers only
    data["ladder"] = {
        "knobs": ["shadows"],
        "levels": [3],
        "evaluated_images": 4,
        "checks": ["localisation", "causal"],
        "training_seeds": [0],
    }
    protocol = protocol_from_dict(data, "tiny")
    runs = ladder_configs(
        protocol,
        [{"method": "gradcam"}],
        str(tmp_path / "data" / "tiny"),
        str(tmp_path / "models"),
        str(tmp_path),
    )
    folders = []
    for ladder_run in runs:
        config = dataclasses.replace(
            ladder_run.config,
            bootstrap_resamples=20,
            evaluation=dataclasses.replace(ladder_run.config.evaluation, bootstrap_resamples=20),
        )
        folders.append(run(config))
    table = ladder_table(folders)
    assert set(zip(table["knob"], table["level"], strict=True)) == {("shadows", 0), ("shadows", 3)}
    figures = table.pivot_table(index="method", columns="level", values="figure")
    # maps that read no pixel (the model-free nulls, the cause mask) score alike at both levels: the
    # positional prior averages the same training scenes, so every level's margins are over the same bars
    for method in ("null:positional_prior", "null:class_area", "null:uniform", "control:cause_mask"):
        assert figures.loc[method, 0] == figures.loc[method, 3]
    assert figures.loc["null:positional_prior", 0] > figures.loc["null:uniform", 0]
    assert table["metric"].eq("r2").all() and np.isfinite(table["metric_value"]).all()
