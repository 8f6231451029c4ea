"""`gradsum finetune`'s options are generated from `FinetuneSettings`: one per field, help and default from it."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from gradsum.cli import build_parser
from gradsum.cli.commands.finetune import add_settings, option, settings_from
from gradsum.errors import SpecError
from gradsum.finetune.settings import HELP, FinetuneSettings, LossWeights


def _parser(settings: type[FinetuneSettings] = FinetuneSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_settings(parser, settings)
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.option_strings}


def test_each_field_is_one_option_with_the_fields_help_and_default() -> None:
    options = _options(_parser())
    assert list(options)[1:] == [f.name for f in dataclasses.fields(FinetuneSettings)]
    assert options["batch_size"].option_strings == ["--batch-size"]
    assert options["foreground"].required and not options["samples"].required
    assert options["samples"].help == "K: scenes of the split fine-tuned on, drawn by the seed (default: 50)"
    assert options["lr"].help == "AdamW learning rate (default: 1e-05)"
    weights_help = "loss weights background,foreground,relevance,keep as in RobustViT"
    assert options["weights"].help == f"{weights_help} (default: 2,0.3,0.8,0.2)"


def test_options_not_given_take_the_dataclasss_defaults() -> None:
    args = _parser().parse_args(["--foreground", "road,car", "--weights", "1,1,1,0", "--batch-size", "4"])
    assert settings_from(args) == FinetuneSettings(("road", "car"), LossWeights(1, 1, 1, 0), batch_size=4)


def test_a_new_field_shows_up_as_an_option() -> None:
    @dataclass(frozen=True)
    class WithMomentum(FinetuneSettings):
        momentum: float = field(default=0.9, metadata={HELP: "AdamW beta1"})

    options = _options(_parser(WithMomentum))
    assert options["momentum"].option_strings == ["--momentum"]
    assert options["momentum"].help == "AdamW beta1 (default: 0.9)"
    parsed = settings_from(
        _parser(WithMomentum).parse_args(["--foreground", "road", "--momentum", "0.5"]), WithMomentum
    )
    assert parsed == WithMomentum(("road",), momentum=0.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], r"^--steps: must be 1 or more, got 0$"),
        (["--batch-size", "two"], r"^--batch-size: 'two' is not an integer$"),
        (["--weights", "2,0.3,0.8"], r"^--weights: '2,0\.3,0\.8' is not four non-negative numbers"),
        (["--foreground", "roads"], r"^--foreground: unknown Cityscapes class 'roads'"),
    ],
)
def test_a_bad_option_is_named(argv: list[str], message: str) -> None:
    args = _parser().parse_args(["--foreground", "road", *argv])
    with pytest.raises(SpecError, match=message):
        settings_from(args)


def test_the_command_lists_the_generated_options() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["finetune"].format_help()  # type: ignore[union-attr]
    for f in dataclasses.fields(FinetuneSettings):
        assert option(f.name) in text
