"""The results contract: the files of every folder GradSUM writes, each core table's columns and dtypes,
and the one reader and writer of tables.

Stages talk through folders: `gradsum run` writes a results folder, `gradsum evaluate` replaces its
trust tables, `gradsum report` and `gradsum compare` read it back. A file's name, a table's columns and
how a stored cell becomes a value are declared here once; `write_table` and `read_table` are the only
code that turns a table into bytes and back. A trust check declares its own tables with `TableSchema`
too. pandas is imported inside the two functions, so that the CLI can name files without loading it.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from gradsum.errors import ResultsError
from gradsum.fileio import atomic_write_bytes

if TYPE_CHECKING:
    import pandas as pd

# --- Files of a results folder ------------------------------------------------------------------------

#: Every folder GradSUM produces (a results folder, a truth set) describes itself in this file; a results
#: folder's maps each other file's relative path to its sha256.
MANIFEST = "manifest.json"
#: The self-contained HTML report.
REPORT = "report.html"
#: The report's figures (`plots/<stem>.png` and `.pdf`).
PLOTS = "plots"
#: The model cards, one `cards/<model>.json` per model of the run.
CARDS = "cards"
#: The manifest key under which a results folder records the sha256 of the leaderboard protocol it ran.
PROTOCOL_KEY = "protocol"

# --- Files of a run's work folder (`results/.<name>.work/`), kept until the run completes -------------

#: The fingerprint of the run a work folder belongs to.
FINGERPRINT = "run.json"
#: The finished shards, one folder each (`shards/00003/`).
SHARDS = "shards"
#: The finished trust checks, one folder each (`checks/causal/`): the check's result and the evaluation
#: settings it was computed with.
FINISHED_CHECKS = "checks"

# --- Files of a model folder and of its training state ------------------------------------------------

#: A model folder holds its card and its weights.
CARD = "card.json"
WEIGHTS = "model.safetensors"
#: The weight files a model folder loads, in order: safetensors, else a tensors-only torch file.
FOLDER_WEIGHTS = (WEIGHTS, "model.pt", "model.pth")
#: Training's resume state and its best weights so far (in the training state folder).
RESUME_STATE = "resume.pt"
BEST_WEIGHTS = "best.safetensors"

# --- Files of `gradsum attribute`'s folder ------------------------------------------------------------

#: What was attributed and how (method, target, model, truth set, split).
ATTRIBUTION_RECORD = "attribution.json"
#: The maps, one (H, W) array per image.
ATTRIBUTION_MAPS = "maps.npy"

# --- Tables -------------------------------------------------------------------------------------------

CSV = ".csv"
PARQUET = ".parquet"
#: Column dtypes a schema may declare: text, yes/no, whole numbers, real numbers.
TEXT, BOOL, INT, FLOAT = "str", "bool", "int64", "float64"
DTYPES = (TEXT, BOOL, INT, FLOAT)
#: Columns read from CSV as text in every table, declared or not: an image id "0001" stays a string.
IDENTIFIERS = ("model", "method", "image", "class", "a", "b")


@dataclass(frozen=True)
class TableSchema:
    """One table of a folder: its name, its columns with their dtypes (in order), where it is stored,
    whether a results folder must hold it (with at least one row), and the declared columns that tables
    written before those columns existed may lack.

    `files`: the first is written; a reader takes the first that exists. Default: `<name>.csv`.
    """

    name: str
    columns: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()
    required: bool = False
    optional: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.files:
            object.__setattr__(self, "files", (f"{self.name}{CSV}",))
        unknown = sorted({dtype for _, dtype in self.columns} - set(DTYPES))
        if unknown:
            raise ValueError(f"table {self.name}: unknown dtype(s) {unknown}; valid: {', '.join(DTYPES)}")
        undeclared = [c for c in self.optional if c not in self.names]
        if undeclared:
            raise ValueError(f"table {self.name}: optional column(s) {undeclared} are not declared")

    @property
    def file(self) -> str:
        """The file the table is written to."""
        return self.files[0]

    @property
    def names(self) -> tuple[str, ...]:
        """The declared columns, in order."""
        return tuple(name for name, _ in self.columns)

    @property
    def required_names(self) -> tuple[str, ...]:
        """The declared columns every stored table must hold."""
        return tuple(name for name in self.names if name not in self.optional)

    def stored_as(self, file: str) -> TableSchema:
        """The same table stored under another file name (a user's `--out`)."""
        return dataclasses.replace(self, files=(file,))


def _columns(*groups: tuple[str, tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
    """(column, dtype) pairs from (dtype, columns) groups, in the order given."""
    return tuple((name, dtype) for dtype, names in groups for name in names)


#: GradSUM per image × class: the class's score, share of the map's mass and lift.
PER_IMAGE = TableSchema(
    "per_image",
    _columns(
        (TEXT, ("model", "method", "image")),
        (INT, ("class_id",)),
        (TEXT, ("class",)),
        (INT, ("pixels",)),
        (FLOAT, ("area_share", "score", "mass_share", "lift")),
    ),
    # parquet; the CSV is read where a folder was written without pyarrow
    files=("per_image.parquet", "per_image.csv"),
    required=True,
)
#: GradSUM per model × method × image: the share of the map's mass and of the frame's area on void (ignored)
#: ids, which the profile cannot see, and the image's robust distance from the model × method's median
#: profile with the outlier flag (`gradsum.aggregation.outliers`). Folders written before it lack it.
INPUT_DATA = TableSchema(
    "input_data",
    _columns(
        (TEXT, ("model", "method", "image")),
        (FLOAT, ("void_share", "void_area_share", "distance")),
        (BOOL, ("outlier",)),
    ),
)
#: One row per model × method × class: each per-image figure's mean with its bootstrap interval.
PROFILES = TableSchema(
    "profiles",
    _columns(
        (TEXT, ("model", "method", "class")),
        (INT, ("class_id",)),
        (TEXT, ("category",)),
        (
            FLOAT,
            (
                "score_mean",
                "score_ci_low",
                "score_ci_high",
                "mass_share",
                "mass_share_ci_low",
                "mass_share_ci_high",
                "lift",
                "lift_ci_low",
                "lift_ci_high",
            ),
        ),
        (INT, ("n_images",)),
    ),
    required=True,
)
#: One row per pair of profiles × class: the test, its Holm-corrected p, and the profiles' rank agreement.
COMPARISONS = TableSchema(
    "comparisons",
    _columns(
        (TEXT, ("a", "b", "class")),
        (INT, ("class_id", "n_pairs")),
        (FLOAT, ("mean_a", "mean_b", "mean_diff", "statistic", "p_value", "p_holm")),
        (BOOL, ("differs",)),
        (FLOAT, ("spearman_rho", "spearman_ci_low", "spearman_ci_high")),
        (TEXT, ("test",)),
        (INT, ("n_a", "n_b")),
    ),
    # the test that ran and each side's sample size came later; older tables still read
    optional=("test", "n_a", "n_b"),
)
#: ViT attention: per model × layer × head, the rows' entropy relative to a uniform row.
ATTENTION = TableSchema(
    "attention",
    _columns((TEXT, ("model",)), (INT, ("layer", "head")), (FLOAT, ("entropy_ratio",))),
)
#: ViT attention: per model × layer × class, the raw attention's class profile.
ATTENTION_PROFILES = TableSchema(
    "attention_profiles",
    _columns(
        (TEXT, ("model",)),
        (INT, ("layer",)),
        (TEXT, ("class",)),
        (INT, ("class_id",)),
        (FLOAT, ("score_mean", "score_ci_low", "score_ci_high")),
        (INT, ("n_images",)),
    ),
)
#: One row per model × method whose task has declared causes: does the profile agree with them?
GROUND_TRUTH = TableSchema(
    "ground_truth",
    _columns(
        (TEXT, ("model", "method", "task", "expected")),
        (BOOL, ("agrees",)),
        (TEXT, ("detail",)),
    ),
)
#: One row per model × method: the verdict; the criteria's and the checks' own figures follow these columns.
TRUST = TableSchema(
    "trust",
    _columns(
        (TEXT, ("model", "method", "role")),
        (BOOL, ("null",)),
        (TEXT, ("verdict", "failed", "summary")),
    ),
)
#: One row per model: the method to use (empty where none is recommended) and why.
RECOMMENDATIONS = TableSchema(
    "recommendations",
    _columns((TEXT, ("model", "method")), (INT, ("passed",)), (TEXT, ("sentence",))),
)
#: The figures every per-image criterion's verdict is computed from (`gradsum.evaluation.verdicts`), one row
#: per model × method × criterion × image: the criterion's per-image value and, for a ratio figure, its
#: denominator (NaN where the criterion has none). With `CRITERIA` it recomputes the trust table's verdicts.
CRITERIA_PER_IMAGE = TableSchema(
    "criteria_per_image",
    _columns(
        (TEXT, ("model", "method", "role", "criterion", "image")),
        (FLOAT, ("value", "denominator")),
    ),
    files=("criteria_per_image.parquet", "criteria_per_image.csv"),
)
#: One row per criterion of the run (`gradsum.evaluation.base.Criterion`; `key` is its verdict columns'
#: stem): which figure it reads (`denominator` "" where none), what decides it (`threshold` NaN where none).
CRITERIA = TableSchema(
    "criteria",
    _columns(
        (TEXT, ("key", "check", "column", "denominator", "over", "text")),
        (BOOL, ("higher_is_better", "against_nulls", "evidence")),
        (FLOAT, ("threshold",)),
    ),
)
#: The label-quality study (`labels` config), one row per level of labels: how it was made and how
#: well it matches the exact labels (mIoU, pixel accuracy over pixels both label, void share).
LABEL_LEVELS = TableSchema(
    "label_levels",
    _columns(
        (TEXT, ("level", "kind", "description", "details")),
        (FLOAT, ("miou", "pixel_accuracy", "void_share", "held_out_miou")),
    ),
)
#: Per level × model × method: the profile's Spearman against the exact-label profile, image-bootstrap CI.
LABEL_AGREEMENT = TableSchema(
    "label_agreement",
    _columns(
        (TEXT, ("level", "model", "method")),
        (FLOAT, ("miou", "spearman", "spearman_ci_low", "spearman_ci_high")),
        (INT, ("classes", "lost")),
    ),
)
#: Per model × method: the label mIoU below which its profile stopped agreeing (NaN: it always agreed).
LABEL_THRESHOLDS = TableSchema(
    "label_thresholds",
    _columns((TEXT, ("model", "method")), (FLOAT, ("agreement", "miou_threshold", "lowest_miou_agreeing"))),
)
#: Per level × model × method × class: the paired per-image score change with its bootstrap CI.
LABEL_CLASSES = TableSchema(
    "label_classes",
    _columns(
        (TEXT, ("level", "model", "method", "class")),
        (INT, ("class_id", "images")),
        (FLOAT, ("exact", "degraded", "change", "change_ci_low", "change_ci_high", "relative_change")),
    ),
)
#: Per level × model × method × verdict of the trust table: the verdict under exact and level labels.
LABEL_VERDICTS = TableSchema(
    "label_verdicts",
    _columns(
        (TEXT, ("level", "model", "method", "role", "criterion", "exact", "degraded")),
        (BOOL, ("changed",)),
    ),
)
#: Per model × method × Cityscapes category: the category's score and the spread of its classes' scores.
LABEL_CATEGORIES = TableSchema(
    "label_categories",
    _columns(
        (TEXT, ("model", "method", "category")),
        (FLOAT, ("score",)),
        (INT, ("classes",)),
        (FLOAT, ("class_min", "class_max")),
    ),
)
#: The study's tables, in the order the report reads them.
LABEL_TABLES = (
    LABEL_LEVELS,
    LABEL_AGREEMENT,
    LABEL_THRESHOLDS,
    LABEL_CLASSES,
    LABEL_VERDICTS,
    LABEL_CATEGORIES,
)
#: The compression study (`compression` config), one row per compressed variant: what was compressed how
#: (the card's `compression` record) and the task metric's change against the parent on the same images,
#: with its paired image-bootstrap CI; `dropped`: the drop's CI lies wholly beyond the tolerance.
COMPRESSION_LEVELS = TableSchema(
    "compression_levels",
    _columns(
        (TEXT, ("model", "parent", "compression")),
        (FLOAT, ("level", "sparsity")),
        (INT, ("parameters", "bytes", "images")),
        (TEXT, ("metric",)),
        (FLOAT, ("parent_value", "value", "change", "change_ci_low", "change_ci_high", "tolerance")),
        (BOOL, ("dropped",)),
    ),
)
#: Per variant × method: the profile's agreement with its parent's on the same images (Spearman with its
#: image-bootstrap CI; the class whose per-image `statistic` moved most, with its paired CI), whether it is
#: shown to drift, and the gate's verdict against the parent.
COMPRESSION_AGREEMENT = TableSchema(
    "compression_agreement",
    _columns(
        (TEXT, ("model", "parent", "compression")),
        (FLOAT, ("level",)),
        (TEXT, ("method",)),
        (FLOAT, ("spearman", "spearman_ci_low", "spearman_ci_high")),
        (INT, ("classes", "lost")),
        (TEXT, ("statistic", "shift_class")),
        (FLOAT, ("shift", "shift_ci_low", "shift_ci_high")),
        (INT, ("shift_images",)),
        (FLOAT, ("floor", "tolerance")),
        (BOOL, ("drifted",)),
        (TEXT, ("gate", "gate_failed")),
    ),
)
#: Per parent × compression × method: the lowest level at which the profile is shown to drift and the
#: lowest at which the task metric is shown to drop (NaN: at no level tested), and which came first.
COMPRESSION_ONSET = TableSchema(
    "compression_onset",
    _columns(
        (TEXT, ("parent", "compression", "method")),
        (INT, ("levels",)),
        (TEXT, ("drift_model",)),
        (FLOAT, ("drift_level",)),
        (TEXT, ("drop_model",)),
        (FLOAT, ("drop_level",)),
        (TEXT, ("order",)),
    ),
)
#: `COMPRESSION_ONSET.order`: which was shown first as the level rises, the profile's drift or the task
#: metric's drop (at the same level: together; at no level tested: neither), in the order the report counts them.
PROFILE_FIRST, TOGETHER, METRIC_FIRST, NEITHER = "profile first", "together", "metric first", "neither"
ONSET_ORDERS = (PROFILE_FIRST, TOGETHER, METRIC_FIRST, NEITHER)
#: The compression study's tables, in the order the report reads them.
COMPRESSION_TABLES = (COMPRESSION_LEVELS, COMPRESSION_AGREEMENT, COMPRESSION_ONSET)
#: The tables a results folder may hold besides the checks' own, in the order the report reads them.
CORE_TABLES = (
    PER_IMAGE,
    PROFILES,
    COMPARISONS,
    ATTENTION,
    ATTENTION_PROFILES,
    GROUND_TRUTH,
    TRUST,
    RECOMMENDATIONS,
    INPUT_DATA,
    *LABEL_TABLES,
    *COMPRESSION_TABLES,
)


#: The trust layer's record of what its verdicts are computed from, written with the trust table and read
#: back like a check's tables (a results folder's manifest lists them in `trust_tables`).
VERDICT_TABLES = (CRITERIA, CRITERIA_PER_IMAGE)


def table_schema(name: str) -> TableSchema:
    """The schema of the table called `name`: a core or verdict table's, else an undeclared `<name>.csv`
    (a check's)."""
    declared = (*CORE_TABLES, *VERDICT_TABLES)
    return next((schema for schema in declared if schema.name == name), TableSchema(name))


def write_table(folder: str | os.PathLike[str], schema: TableSchema, frame: pd.DataFrame) -> Path:
    """Atomically write `frame` as `schema`'s file in `folder` (parquet or CSV by its suffix, no index).

    The frame is written as it is: a writer that keeps its column order and dtypes gets the same bytes.
    """
    path = Path(folder) / schema.file
    missing = [c for c in schema.required_names if c not in frame.columns]
    if missing:
        raise ResultsError(
            f"{path}: the table to write lacks column(s) {', '.join(repr(c) for c in missing)}"
        )
    if path.suffix == PARQUET:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return atomic_write_bytes(path, buffer.getvalue())
    return atomic_write_bytes(path, frame.to_csv(index=False).encode("utf-8"))


def write_study_tables(
    folder: str | os.PathLike[str], schemas: Sequence[TableSchema], tables: Mapping[str, pd.DataFrame]
) -> list[Path]:
    """Write each of `schemas`' tables from `tables` (by name), its declared columns in order: a study's
    tables. A table without rows (a study without levels of a kind) is written with its header only."""
    written = []
    for schema in schemas:
        frame = tables[schema.name]
        columns = list(schema.names)
        written.append(
            write_table(folder, schema, frame.reindex(columns=columns) if frame.empty else frame[columns])
        )
    return written


@overload
def read_table(
    folder: str | os.PathLike[str], schema: TableSchema, *, missing_ok: Literal[False] = False
) -> pd.DataFrame: ...
@overload
def read_table(
    folder: str | os.PathLike[str], schema: TableSchema, *, missing_ok: Literal[True]
) -> pd.DataFrame | None: ...
@overload
def read_table(
    folder: str | os.PathLike[str], schema: TableSchema, *, missing_ok: bool
) -> pd.DataFrame | None: ...
def read_table(
    folder: str | os.PathLike[str], schema: TableSchema, *, missing_ok: bool = False
) -> pd.DataFrame | None:
    """`schema`'s table in `folder`, its declared columns checked and typed (None when it is absent and
    `missing_ok`). Any fault raises `ResultsError` naming the file, and the column where one is at fault."""
    root = Path(folder)
    path = next((root / name for name in schema.files if (root / name).is_file()), None)
    if path is None:
        if missing_ok:
            return None
        why = f" (a required table; is {root} a results folder?)" if schema.required else ""
        raise ResultsError(f"{root / schema.file}: missing{why}")
    frame = _parse(path, schema)
    missing = [c for c in schema.required_names if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
    if schema.required and frame.empty:
        raise ResultsError(f"{path}: no rows")
    return _typed(frame, schema, path)


def _parse(path: Path, schema: TableSchema) -> pd.DataFrame:
    import pandas as pd

    text = {name: str for name in (*IDENTIFIERS, *(c for c, d in schema.columns if d == TEXT))}
    try:
        if path.suffix == PARQUET:
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=text)
    except pd.errors.EmptyDataError:
        # a check with nothing to report (no cause masks, say) writes a table without rows or columns
        return pd.DataFrame()
    except Exception as error:  # pandas and pyarrow raise many types on damaged files
        raise ResultsError(f"{path}: cannot be read ({type(error).__name__}: {error})") from error


def _typed(frame: pd.DataFrame, schema: TableSchema, path: Path) -> pd.DataFrame:
    """The frame with every declared column present cast to its dtype."""
    typed = frame.copy()
    for name, dtype in schema.columns:
        if name not in typed.columns:
            continue
        column = typed[name]
        if dtype == TEXT:
            typed[name] = column.astype(str).mask(column.isna())
        elif dtype == BOOL:
            typed[name] = as_bool(column, path)
        elif column.dtype != dtype:
            try:
                typed[name] = column.astype(dtype)
            except (TypeError, ValueError) as error:
                raise ResultsError(f"{path}: column {name!r} is not {dtype} ({error})") from error
    return typed


#: How a yes/no cell is stored: pandas writes True and False.
_BOOLS = {"True": True, "False": False, True: True, False: False}


def as_bool(column: pd.Series, path: Path) -> pd.Series:
    """A yes/no column of the table stored at `path` as bool; a cell that is neither raises naming it.

    `read_table` applies it to every declared BOOL column; a reader of a table that does not declare its
    columns yet applies it to the ones it knows are yes/no.
    """
    import pandas as pd

    if pd.api.types.is_bool_dtype(column.dtype):
        return column
    values = column.map(_BOOLS)
    if values.isna().any():
        bad = column[values.isna()].iloc[0]
        raise ResultsError(f"{path}: column {column.name!r} holds {bad!r}, not True or False")
    return values.astype(bool)
