"""Import ALS factors trained by Spark MLlib into a served CF model (``osreco cf import``).

Spark's ``ALSModel.itemFactors`` / ``userFactors`` written with ``.write.parquet(path)`` are a
folder of ``part-*.parquet`` files (or one file) with columns ``id`` (int) and ``features``
(array<float>). Item ids become strings that must match the catalog's ids; user ids are
pseudonymized with ``OSRECO_HMAC_KEY`` exactly as ``osreco cf train`` does, so the sidecar
finds a user by the same raw id. Every problem row is reported with its file and row number;
nothing is stored when a table is unusable.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osreco.cf.errors import InteractionError
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.privacy import PrivacyConfig

SPARK_SNIPPET_FIX = ("write the factors with model.itemFactors.write.parquet(PATH) / "
                     "model.userFactors.write.parquet(PATH) (columns id: int, features: array<float>)")


@dataclass
class FactorTable:
    """One factor table read from Parquet: ids as strings (in file order) and an (n, dim) matrix."""

    ids: list[str]
    factors: np.ndarray
    files: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        """Factor dimension."""
        return int(self.factors.shape[1]) if self.factors.ndim == 2 else 0


def parquet_files(path: str | Path) -> list[Path]:
    """The Parquet files of a Spark output folder (``part-*.parquet``) or a single file.

    Raises:
        InteractionError: the path does not exist or holds no Parquet file.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise InteractionError(f"{p} does not exist", file=str(p), fix=SPARK_SNIPPET_FIX)
    files = sorted(f for f in p.iterdir()
                   if f.is_file() and f.suffix == ".parquet" and not f.name.startswith((".", "_")))
    if not files:
        raise InteractionError(f"{p} holds no .parquet file (expected Spark's part-*.parquet)", file=str(p),
                               fix=SPARK_SNIPPET_FIX)
    return files


def read_factor_table(path: str | Path, what: str) -> FactorTable:
    """Read a Spark ALS factor table (``id``, ``features``) from a Parquet folder or file.

    Args:
        path: the folder Spark wrote, or one Parquet file.
        what: ``item`` or ``user`` (for messages).
    Returns:
        The table.
    Raises:
        InteractionError: missing columns, null or non-integer ids, duplicate ids, ragged feature
            lengths, NaN/inf values or an empty table, naming the file and row.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids: list[str] = []
    rows: list[list[float]] = []
    seen: dict[str, str] = {}
    dim: int | None = None
    files = parquet_files(path)
    for file in files:
        try:
            table = pq.read_table(file)
        except (OSError, pa.ArrowException) as e:
            raise InteractionError(f"cannot read {what} factors {file}: {e}", file=str(file),
                                   fix=SPARK_SNIPPET_FIX) from e
        missing = [c for c in ("id", "features") if c not in table.column_names]
        if missing:
            raise InteractionError(f"{what} factors {file} lack column(s) {', '.join(missing)} "
                                   f"(has {', '.join(table.column_names) or 'none'})", file=str(file),
                                   fix=SPARK_SNIPPET_FIX)
        if not pa.types.is_integer(table.schema.field("id").type):
            raise InteractionError(f"{what} factors {file}: column id is {table.schema.field('id').type}, "
                                   "Spark ALS writes integers", file=str(file), fix=SPARK_SNIPPET_FIX)
        for row, (raw_id, vec) in enumerate(zip(table.column("id").to_pylist(),
                                                table.column("features").to_pylist()), start=1):
            where = f"{what} factors {file.name} row {row}"
            if raw_id is None:
                raise InteractionError(f"{where}: id is null", file=str(file), row=row, fix=SPARK_SNIPPET_FIX)
            key = str(raw_id)
            if not isinstance(vec, list) or not vec:
                raise InteractionError(f"{where} (id {key}): features is empty or not an array", file=str(file),
                                       row=row, fix=SPARK_SNIPPET_FIX)
            if dim is None:
                dim = len(vec)
            if len(vec) != dim:
                raise InteractionError(f"{where} (id {key}): {len(vec)} features, earlier rows have {dim}",
                                       file=str(file), row=row,
                                       fix="write all factors of one ALS model (one rank) into the folder")
            if any(v is None or not math.isfinite(v) for v in vec):
                raise InteractionError(f"{where} (id {key}): features hold NaN, inf or null", file=str(file),
                                       row=row, fix="retrain in Spark (lower the learning rank or raise regParam); "
                                                    "NaN factors usually mean a diverged fit")
            if key in seen:
                raise InteractionError(f"{where}: id {key} appears twice (also in {seen[key]})", file=str(file),
                                       row=row, fix="write one ALS model's factors only once into the folder")
            seen[key] = f"{file.name} row {row}"
            ids.append(key)
            rows.append(vec)
    if not ids:
        raise InteractionError(f"{what} factors in {path} are empty", file=str(path), fix=SPARK_SNIPPET_FIX)
    return FactorTable(ids, np.asarray(rows, dtype=np.float32), [str(f) for f in files])


@dataclass
class ImportReport:
    """What an import kept and dropped."""

    items_read: int
    items_kept: int
    items_not_in_catalog: list[str]
    users: int
    dim: int
    catalog_items: int
    items_without_factors: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready; unknown ids are cut to the first 20."""
        return {"items_read": self.items_read, "items_kept": self.items_kept,
                "items_not_in_catalog": len(self.items_not_in_catalog),
                "items_not_in_catalog_sample": self.items_not_in_catalog[:20], "users": self.users, "dim": self.dim,
                "catalog_items": self.catalog_items, "items_without_factors": self.items_without_factors}


def build_model(items: FactorTable, users: FactorTable, privacy: PrivacyConfig, catalog: Collection[str],
                config: CFConfig) -> tuple[CFModel, ImportReport]:
    """A served :class:`CFModel` from Spark factors.

    Catalog items without a Spark factor get a zero row and ``item_sums`` 0 (``fit_content``
    then predicts them from content, as training does); Spark items not in the catalog are
    dropped and counted. Popularity is zero (Spark's factors carry no interaction counts).

    Raises:
        InteractionError: item and user dimensions differ, or no Spark item is in the catalog.
    """
    if items.dim != users.dim:
        raise InteractionError(f"item factors have {items.dim} features, user factors {users.dim}",
                               file=items.files[0] if items.files else None,
                               fix="import the itemFactors and userFactors of the same ALS model")
    known = set(catalog)
    keep = [i for i, item_id in enumerate(items.ids) if item_id in known]
    unknown = [item_id for item_id in items.ids if item_id not in known]
    if not keep:
        raise InteractionError(f"none of the {len(items.ids)} Spark item ids (e.g. {items.ids[:3]}) is in the "
                               f"catalog ({len(known)} items, e.g. {sorted(known)[:3]})",
                               file=items.files[0] if items.files else None,
                               fix="train Spark ALS on the catalog's item ids (integers as the catalog writes them)")
    pos = {items.ids[i]: i for i in keep}
    item_ids = sorted(known)
    factors = np.zeros((len(item_ids), items.dim), dtype=np.float32)
    sums = np.zeros(len(item_ids), dtype=np.float64)
    for row, item_id in enumerate(item_ids):
        if item_id in pos:
            factors[row] = items.factors[pos[item_id]]
            sums[row] = 1.0
    keys = np.array([privacy.pseudonymize(u) for u in users.ids], dtype=object)
    meta: dict[str, object] = {"models": ["als"], "source": "spark-als", "users": len(keys), "items": len(item_ids),
                               "items_with_interactions": len(keep), "item_coverage": len(keep) / len(item_ids),
                               "factors": items.dim, "spark_files": {"items": items.files, "users": users.files}}
    model = CFModel(np.array(item_ids, dtype=object), factors, keys, users.factors, np.zeros(len(item_ids)),
                    sums, config, None, meta)
    report = ImportReport(len(items.ids), len(keep), unknown, len(keys), items.dim, len(item_ids),
                          len(item_ids) - len(keep))
    return model, report
