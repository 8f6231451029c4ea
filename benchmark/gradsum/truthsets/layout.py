"""The Cityscapes on-disk layout, shared by the Cityscapes reader and the synthetic writer.

`{root}/{type}/{split}/{city}/{city}_{seq:06}_{frame:06}_{type}[_{type2}].{ext}`; GradSUM adds a
`scene/` type (latent parameters and targets of synthetic frames) and a `manifest.json` at the root,
written last, whose presence marks a complete truth set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# the truth-set readers and writer import the manifest's name from here
from gradsum.contract import MANIFEST as MANIFEST
from gradsum.errors import TruthSetError

SPLITS = ("train", "val", "test")
#: Cityscapes `instanceIds`: pixels of a thing instance hold `class id · INSTANCE_SCALE + k`, all others
#: their plain class id.
INSTANCE_SCALE = 1000


@dataclass(frozen=True, order=True)
class FrameId:
    """One frame's identity in the Cityscapes naming scheme."""

    split: str
    city: str
    seq: int
    frame: int

    @property
    def stem(self) -> str:
        """`{city}_{seq:06}_{frame:06}`, the prefix every file of the frame shares."""
        return f"{self.city}_{self.seq:06d}_{self.frame:06d}"

    def path(self, root: Path, kind: str, suffix: str) -> Path:
        """`{root}/{kind}/{split}/{city}/{stem}_{suffix}`."""
        return Path(root) / kind / self.split / self.city / f"{self.stem}_{suffix}"

    def image(self, root: Path) -> Path:
        return self.path(root, "leftImg8bit", "leftImg8bit.png")

    def label_ids(self, root: Path, annotation: str = "gtFine") -> Path:
        return self.path(root, annotation, f"{annotation}_labelIds.png")

    def instance_ids(self, root: Path, annotation: str = "gtFine") -> Path:
        return self.path(root, annotation, f"{annotation}_instanceIds.png")

    def color(self, root: Path, annotation: str = "gtFine") -> Path:
        return self.path(root, annotation, f"{annotation}_color.png")

    def polygons(self, root: Path, annotation: str = "gtFine") -> Path:
        return self.path(root, annotation, f"{annotation}_polygons.json")

    def vehicle(self, root: Path) -> Path:
        return self.path(root, "vehicle", "vehicle.json")

    def scene(self, root: Path) -> Path:
        return self.path(root, "scene", "scene.json")


def parse_image_name(path: Path, split: str) -> FrameId:
    """The `FrameId` of a `..._leftImg8bit.png` file; raises TruthSetError on a foreign name."""
    parts = path.name.split("_")
    if (
        len(parts) < 4
        or not path.name.endswith("_leftImg8bit.png")
        or not (parts[-3].isdigit() and parts[-2].isdigit())
    ):
        raise TruthSetError(
            f"{path}: not a Cityscapes image name ({{city}}_{{seq:06}}_{{frame:06}}_leftImg8bit.png)"
        )
    city = "_".join(parts[:-3])
    return FrameId(split=split, city=city, seq=int(parts[-3]), frame=int(parts[-2]))
