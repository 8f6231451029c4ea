"""The grammar of the model and method labels GradSUM writes into results and reads from the CLI.

    method label :=  [source ":"] method ["/" part]     gradcam, lib:gradcam, null:random, split/attention
    model label  :=  [run ":"] model                    hybrid_vit, default:hybrid_vit
    pair label   :=  model label "/" method label       hybrid_vit/split/attention, runA:vit/lib:gradcam

- `:` qualifies a name by where it comes from: a method's source (`lib`: pytorch-grad-cam, `null`: a
  null explainer, `control`: a known-answer control) or, in a comparison of several results folders,
  a model's run (the folder's name).
- `/` goes down one level: from a multi-part method to one of its parts, and from a model to a method.

Model names contain neither `/` nor `:` (`check_model_name`, applied to every configured model), and a
run is a folder's name, which holds no `/`. So the first `/` of a pair label ends the model label
(`hybrid_vit/split/attention` is the method `split/attention` of the model `hybrid_vit`, whatever parts
and sources the method label holds), and the last `:` of a model label ends the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradsum.errors import GradSUMError, SpecError

#: separates a qualifier (a method's source, a model's run) from the name it qualifies
QUALIFIER = ":"
#: separates a method from its part, and a model from its method in a pair label
LEVEL = "/"

#: method sources: pytorch-grad-cam's implementations, null explainers and known-answer controls
LIBRARY_SOURCE = "lib"
NULL_SOURCE = "null"
CONTROL_SOURCE = "control"


@dataclass(frozen=True)
class MethodLabel:
    """A method label's pieces: `source:method/part`, where the source and the part may be absent."""

    method: str
    source: str | None = None
    part: str | None = None


def qualified(qualifier: str, name: str) -> str:
    """`qualifier:name`: a method from a source (`lib:gradcam`) or a model from a run (`runA:vit`)."""
    return f"{qualifier}{QUALIFIER}{name}"


def part_label(method: str, part: str) -> str:
    """`method/part`: one named part of a multi-part method (`split/attention`)."""
    return f"{method}{LEVEL}{part}"


def pair_label(model: str, method: str) -> str:
    """`model/method`: one side of a comparison."""
    return f"{model}{LEVEL}{method}"


def parse_method(label: str) -> MethodLabel:
    """The source, method and part of a method label (`lib:gradcam`, `split/attention`)."""
    head, level, part = label.partition(LEVEL)
    source, qualifier, method = head.rpartition(QUALIFIER)
    return MethodLabel(method, source if qualifier else None, part if level else None)


def parse_pair(label: str, argument: str = "label") -> tuple[str, str]:
    """The model label and the method label of a pair label; the model ends at the first `/`."""
    model, level, method = label.partition(LEVEL)
    if not level or not model or not method:
        raise GradSUMError(f"{argument}: {label!r} is not a model{LEVEL}method label")
    return model, method


def check_model_name(name: str, argument: str) -> None:
    """Refuse a model name that holds a separator, which would make labels ambiguous."""
    if not name or LEVEL in name or QUALIFIER in name:
        raise SpecError(
            f"{argument}: model name {name!r} must be non-empty and hold neither {LEVEL!r} nor {QUALIFIER!r} "
            f"(labels use them as separators: model{LEVEL}method, run{QUALIFIER}model)"
        )
