"""Label-map encodings (how a PNG stores class ids) and PNG readers whose errors name the file.

A decoder turns the raw pixel array of a label PNG into the truth set's own class ids; the class
table then maps those onto Cityscapes ids. Add an encoding with `@ENCODINGS.register(name)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from gradsum.errors import TruthSetError
from gradsum.registry import Registry
from gradsum.truthsets.labels import ClassTable
from gradsum.truthsets.layout import INSTANCE_SCALE


class LabelDecodeError(ValueError):
    """A label array does not fit its encoding; readers prefix the file name."""


@dataclass(frozen=True)
class Encoding:
    """One way of storing class ids in a PNG."""

    name: str
    description: str
    #: raw PNG array → own class ids (int64, same H×W); raises LabelDecodeError
    decode: Callable[[np.ndarray, ClassTable], np.ndarray]


ENCODINGS: Registry[Encoding] = Registry("label encoding")


def _encoding(name: str, description: str) -> Callable[[Callable], Callable]:
    def add(decode: Callable[[np.ndarray, ClassTable], np.ndarray]) -> Callable:
        ENCODINGS.add(name, Encoding(name, description, decode))
        return decode

    return add


def _single_channel(raw: np.ndarray, name: str) -> np.ndarray:
    if raw.ndim != 2:
        raise LabelDecodeError(f"encoding {name!r} needs a single-channel PNG, got shape {raw.shape}")
    return raw.astype(np.int64)


@_encoding("id8", "8-bit PNG, one class id per pixel (Cityscapes labelIds, KITTI semantic/)")
def decode_id8(raw: np.ndarray, table: ClassTable) -> np.ndarray:
    """Class ids stored directly in an 8-bit single-channel PNG."""
    if raw.dtype != np.uint8:
        raise LabelDecodeError(f"encoding 'id8' needs an 8-bit PNG, got {raw.dtype}")
    return _single_channel(raw, "id8")


@_encoding("rgb", "RGB colour PNG; each class is the colour in the class table")
def decode_rgb(raw: np.ndarray, table: ClassTable) -> np.ndarray:
    """Class ids looked up from pixel colours via the table's `color` field; shared colours give the first class."""
    if raw.ndim != 3 or raw.shape[2] not in (3, 4):
        raise LabelDecodeError(f"encoding 'rgb' needs an RGB PNG, got shape {raw.shape}")
    rgb = raw[..., :3].astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    packed_table = np.array([(r << 16) | (g << 8) | b for r, g, b in (c.color for c in table.classes)])
    # classes sharing a colour (Cityscapes: pole/polegroup, the black void classes) decode to the first one
    colours, first = np.unique(packed_table, return_index=True)
    ids = np.array(table.ids)[first]
    position = np.clip(np.searchsorted(colours, packed), 0, len(colours) - 1)
    found = colours[position] == packed
    if not found.all():
        unknown = [int(v) for v in np.unique(packed[~found])[:5]]
        shown = ", ".join(f"({v >> 16},{(v >> 8) & 255},{v & 255})" for v in unknown)
        raise LabelDecodeError(f"colours not in class table {table.name!r}: {shown}")
    return ids[position]


@_encoding("id1000", "16/32-bit PNG, id*1000+instance (Cityscapes instanceIds; stuff holds the plain id)")
def decode_id1000(raw: np.ndarray, table: ClassTable) -> np.ndarray:
    """Class ids from `id*1000+k`; values below 1000 are plain ids, as in Cityscapes instanceIds."""
    values = _single_channel(raw, "id1000")
    return np.where(values >= INSTANCE_SCALE, values // INSTANCE_SCALE, values)


@_encoding("id256", "16-bit PNG, id*256+instance (KITTI instance/)")
def decode_id256(raw: np.ndarray, table: ClassTable) -> np.ndarray:
    """Class ids from `id*256+k`."""
    return _single_channel(raw, "id256") // 256


#: PIL modes an image file may have, in words, for the message refusing a non-RGB image
_MODE_WORDS = {
    "1": "1-bit black and white",
    "L": "greyscale",
    "LA": "greyscale with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGB with alpha",
    "CMYK": "CMYK",
    "I": "32-bit greyscale",
    "I;16": "16-bit greyscale",
    "F": "floating-point greyscale",
}


def _open_image(path: Path, what: str) -> tuple[np.ndarray, str]:
    """The pixel array and PIL mode of an image file; missing, empty, unreadable or corrupt files raise."""
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        raise TruthSetError(f"{path}: {what} file is missing") from None
    except OSError as error:
        raise TruthSetError(f"{path}: {what} file is not readable ({error.strerror or error})") from None
    if size == 0:
        raise TruthSetError(f"{path}: {what} file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            return np.array(image), image.mode
    except PermissionError as error:
        raise TruthSetError(f"{path}: {what} file is not readable ({error.strerror})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        # PIL names the file in some messages; the path leads ours already
        reason = str(error).replace(f" {str(path)!r}", "").replace(str(path), "the file")
        raise TruthSetError(f"{path}: {what} file is corrupt or unreadable ({reason})") from None


def read_png(path: Path, what: str) -> np.ndarray:
    """The pixel array of an image file; a missing, empty or corrupt file raises TruthSetError naming it."""
    return _open_image(path, what)[0]


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; any other mode (grey, alpha, palette) raises naming it.

    Expanding grey or dropping alpha would feed a model colours it never saw; converting is the user's call.
    """
    raw, mode = _open_image(path, "image")
    if mode != "RGB":
        words = _MODE_WORDS.get(mode, "not RGB")
        raise TruthSetError(
            f"{path}: image mode {mode!r} ({words}), expected 8-bit RGB; convert it, e.g. "
            f"PIL.Image.open(path).convert('RGB')"
        )
    return raw


def decode_labels(path: Path, encoding: Encoding, table: ClassTable) -> np.ndarray:
    """Own class ids of a label file; bad encodings and ids the table does not know raise TruthSetError."""
    raw = read_png(path, "label")
    try:
        ids = encoding.decode(raw, table)
    except LabelDecodeError as error:
        raise TruthSetError(f"{path}: {error}") from None
    # bincount finds the ids present in one pass (np.unique sorts every pixel)
    present = np.flatnonzero(np.bincount(ids.ravel())) if ids.size and ids.min() >= 0 else np.unique(ids)
    unknown = table.unknown_ids(present)
    if unknown:
        raise TruthSetError(f"{path}: label ids not in class table {table.name!r}: {unknown[:10]}")
    return ids


def check_sizes(image: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path) -> None:
    """Raise TruthSetError when an image and its label map differ in size."""
    if image.shape[:2] != labels.shape[:2]:
        raise TruthSetError(
            f"{label_path}: label size {labels.shape[1]}x{labels.shape[0]} differs from image "
            f"{image_path.name} size {image.shape[1]}x{image.shape[0]}"
        )
