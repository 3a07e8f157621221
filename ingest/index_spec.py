"""The item index contract: field names, mapping, settings, ``_meta`` and alias naming.

``IndexSpec`` is pure: it builds request bodies and checks ``_meta``; it never calls
OpenSearch (``osreco.ingest.rebuild`` does). See docs/contracts.md, "Item index".

Example:
    >>> spec = IndexSpec(alias="products", dim=384, artifact_id="sha256:ab", model="minilm")
    >>> body = spec.index_body()           # settings + mappings + _meta for PUT /products-v1
    >>> spec.versioned_name(2)
    'products-v2'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from osreco.ingest.errors import ConfigError, IndexError_

DEFAULT_FACETS = ("brand", "color", "category", "genres")
DEFAULT_NUMERIC = {"price": "float", "year": "integer", "popularity": "float"}
DEFAULT_DATES = ("release_date",)
ENGINES = ("lucene", "faiss")
SPACES = ("cosinesimil", "l2", "innerproduct")
_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_VERSION_RE = r"-v(\d+)$"


def _osreco_version() -> str:
    from osreco import __version__

    return __version__


class _EncoderLike(Protocol):
    """What ``IndexSpec.from_encoder`` reads from an Encoder."""

    @property
    def dim(self) -> int: ...

    @property
    def artifact_id(self) -> str: ...

    @property
    def manifest(self) -> object: ...


@dataclass(frozen=True)
class NamedVector:
    """One more text encoder's vector field, ``embedding_<name>`` (e.g. ``embedding_zh``).

    Args:
        name: the encoder's name (its language: ``zh``).
        dim, artifact_id, model, language, normalize: from its bundle manifest.
    """

    name: str
    dim: int
    artifact_id: str
    model: str = ""
    language: str = ""
    normalize: bool = True

    @property
    def field(self) -> str:
        """The knn field: ``embedding_<name>``."""
        return f"embedding_{self.name}"

    def meta(self) -> dict[str, object]:
        """Its entry in ``_meta.encoders``."""
        return {"field": self.field, "dim": self.dim, "artifact_id": self.artifact_id, "model": self.model,
                "language": self.language}


@dataclass(frozen=True)
class IndexSpec:
    """Everything needed to create and check an item index.

    Args:
        alias: the name reads go through; concrete indexes are ``<alias>-v<N>``.
        dim: embedding dimension (from the bundle manifest).
        artifact_id: the bundle's content hash, stored in ``_meta``.
        model: the bundle's model name.
        normalize: whether the bundle normalizes vectors (cosine space) or not (l2).
        engine: k-NN engine, ``lucene`` (default) or ``faiss``.
        m, ef_construction: HNSW graph parameters.
        cf_dim: dimension of the collaborative item factors (``cf_vector``).
        facets, numeric, dates: extra fields beyond the contract's defaults.
        shards, replicas: the serving settings (a rebuild loads with 0 replicas).
        refresh_interval: the serving refresh interval (a rebuild loads with -1).
        image_dim: dimension of ``image_embedding`` (an image–text bundle's); 0 = no image field.
        image_artifact_id: that bundle's content hash (in ``_meta``; the sidecar checks it).
        encoders: named text encoders beyond the default one, each with its own knn field
            ``embedding_<name>`` and an entry in ``_meta.encoders``.
    """

    alias: str
    dim: int
    artifact_id: str
    model: str = ""
    normalize: bool = True
    engine: str = "lucene"
    m: int = 16
    ef_construction: int = 128
    cf_dim: int = 64
    facets: tuple[str, ...] = DEFAULT_FACETS
    numeric: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NUMERIC))
    dates: tuple[str, ...] = DEFAULT_DATES
    shards: int = 1
    replicas: int = 0
    refresh_interval: str = "1s"
    image_dim: int = 0
    image_artifact_id: str = ""
    encoders: tuple[NamedVector, ...] = ()

    def __post_init__(self) -> None:
        if not _ALIAS_RE.match(self.alias) or re.search(_VERSION_RE, self.alias):
            raise ConfigError(f"index name {self.alias!r} is not a valid lowercase OpenSearch name "
                              "(or ends in -v<N>, which is reserved for versions)", field="--index",
                              fix="use lowercase letters, digits, '-', '_' or '.'")
        checks = [(self.dim > 0, "dim", "must be positive"),
                  (self.engine in ENGINES, "engine", f"must be one of {ENGINES}"),
                  (2 <= self.m <= 100, "m", "must be in 2..100"),
                  (self.ef_construction >= 2, "ef_construction", "must be >= 2"),
                  (self.cf_dim > 0, "cf_dim", "must be positive"),
                  (self.image_dim >= 0, "image_dim", "must be >= 0"),
                  (self.shards >= 1 and self.replicas >= 0, "shards", "shards >= 1, replicas >= 0"),
                  (bool(self.artifact_id), "artifact_id", "must not be empty")]
        for ok, name, why in checks:
            if not ok:
                raise ConfigError(f"IndexSpec.{name} = {getattr(self, name)!r} {why}", field=name)
        for name, kind in self.numeric.items():
            if kind not in ("float", "integer", "long", "double"):
                raise ConfigError(f"numeric field {name!r} has type {kind!r}", field=f"numeric.{name}")

    @classmethod
    def from_encoder(cls, encoder: _EncoderLike, alias: str, **overrides: Any) -> IndexSpec:
        """Take dim, artifact id, model name and normalization from an Encoder's manifest."""
        manifest = encoder.manifest
        named = encoder.vectors() if hasattr(encoder, "vectors") else ()  # osreco.ingest.encoders.TextEncoders
        return cls(alias=alias, dim=int(encoder.dim), artifact_id=str(encoder.artifact_id),
                   model=str(getattr(manifest, "model_name", "") or ""),
                   normalize=bool(getattr(manifest, "normalize", True)), **{"encoders": named, **overrides})

    def with_fields(self, facets: tuple[str, ...] = (), numeric: Mapping[str, str] | None = None,
                    dates: tuple[str, ...] = ()) -> IndexSpec:
        """A copy that also maps the given facets, numerics and dates (defaults are kept)."""
        from dataclasses import replace

        merged_numeric = dict(self.numeric)
        merged_numeric.update(numeric or {})
        return replace(self, facets=tuple(dict.fromkeys((*self.facets, *facets))),
                       numeric=merged_numeric, dates=tuple(dict.fromkeys((*self.dates, *dates))))

    @property
    def space_type(self) -> str:
        """``cosinesimil`` for normalized embeddings, else ``l2``."""
        return "cosinesimil" if self.normalize else "l2"

    def versioned_name(self, version: int) -> str:
        """The concrete index name for a version number (``<alias>-v<N>``)."""
        return f"{self.alias}-v{version}"

    def version_of(self, index: str) -> int | None:
        """The version number of a concrete index of this alias, or None."""
        match = re.fullmatch(re.escape(self.alias) + _VERSION_RE, index)
        return int(match.group(1)) if match else None

    def meta(self) -> dict[str, object]:
        """The ``_meta`` block consumers check before serving."""
        meta: dict[str, object] = {"artifact_id": self.artifact_id, "dim": self.dim, "model": self.model,
                                   "cf_dim": self.cf_dim, "space_type": self.space_type,
                                   "osreco_version": _osreco_version()}
        if self.image_dim:
            meta.update(image_dim=self.image_dim, image_artifact_id=self.image_artifact_id)
        if self.encoders:
            meta["encoders"] = {v.name: v.meta() for v in self.encoders}
        return meta

    def settings(self, loading: bool = False) -> dict[str, object]:
        """Index settings; ``loading`` turns refresh off and replicas to 0 for a bulk load."""
        return {"index": {"knn": True, "number_of_shards": self.shards,
                          "number_of_replicas": 0 if loading else self.replicas,
                          "refresh_interval": "-1" if loading else self.refresh_interval}}

    def serving_settings(self) -> dict[str, object]:
        """The dynamic settings restored after a bulk load."""
        return {"index": {"number_of_replicas": self.replicas, "refresh_interval": self.refresh_interval}}

    def mappings(self) -> dict[str, object]:
        """The field mapping (see docs/contracts.md)."""
        text = {"type": "text", "analyzer": "english", "fields": {"cjk": {"type": "text", "analyzer": "cjk"}}}
        props: dict[str, object] = {
            "item_id": {"type": "keyword"},
            "title": dict(text), "text": dict(text),
            "image": {"type": "keyword", "index": False},
            # `--audio-field`: the recording's reference, what it says (searched), its hash and language
            "audio": {"type": "keyword", "index": False}, "transcript": dict(text),
            "audio_hash": {"type": "keyword"}, "transcript_language": {"type": "keyword"},
            "embedding": self._knn(self.dim, self.space_type),
            "cf_vector": self._knn(self.cf_dim, "innerproduct"),
            "content_hash": {"type": "keyword"},
            "indexed_at": {"type": "date"},
            # priors written by `osreco cf train` (osreco.cf.priors.PRIOR_FIELDS)
            "popularity": {"type": "float"},
            "rating_avg": {"type": "float"},
            "cf_neighbors": {"type": "keyword"},
            "cf_neighbor_scores": {"type": "float", "index": False},
        }
        if self.image_dim:  # image–text bundles are normalized: cosine space
            props["image_embedding"] = self._knn(self.image_dim, "cosinesimil")
            props["image_hash"] = {"type": "keyword"}
        for v in self.encoders:
            props[v.field] = self._knn(v.dim, "cosinesimil" if v.normalize else "l2")
        props.update({name: {"type": "keyword"} for name in self.facets})
        props.update({name: {"type": kind} for name, kind in self.numeric.items()})
        props.update({name: {"type": "date"} for name in self.dates})
        return {"dynamic": False, "_meta": self.meta(), "properties": props}

    def _knn(self, dim: int, space: str) -> dict[str, object]:
        return {"type": "knn_vector", "dimension": dim,
                "method": {"name": "hnsw", "engine": self.engine, "space_type": space,
                           "parameters": {"m": self.m, "ef_construction": self.ef_construction}}}

    def index_body(self, loading: bool = False) -> dict[str, object]:
        """The body of ``PUT /<alias>-v<N>``."""
        return {"settings": self.settings(loading), "mappings": self.mappings()}

    def check_meta(self, meta: Mapping[str, object] | None, index: str) -> None:
        """Refuse an existing index built for another model or dimension.

        Raises:
            IndexError_: the index's ``_meta`` is missing or does not match this spec.
        """
        if not meta:
            raise IndexError_(f"index {index} has no osreco _meta", index=index,
                              fix=f"rebuild it with `osreco ingest ... --index {self.alias} --rebuild`")
        for key in ("artifact_id", "dim"):
            if meta.get(key) != getattr(self, key):
                raise IndexError_(f"index {index} was built with {key}={meta.get(key)!r}, the bundle has "
                                  f"{getattr(self, key)!r}", index=index, field=key,
                                  fix=f"re-embed everything with `--rebuild`, "
                                      f"or pass the bundle {index} was built with")
        built = meta.get("encoders") or {}
        built = built if isinstance(built, dict) else {}
        missing = sorted(set(built) - {v.name for v in self.encoders})
        if missing:
            raise IndexError_(f"index {index} also holds vectors of the {', '.join(missing)} encoder(s), which "
                              "this load would leave empty", index=index, field="encoders",
                              fix=" ".join(f"pass --bundle-{n}" for n in missing) + " (the bundles it was built with)")
        for v in self.encoders:
            old = built.get(v.name) or {}
            for key in ("dim", "artifact_id"):
                if old.get(key) != getattr(v, key):
                    raise IndexError_(f"index {index} has {v.field} with {key}={old.get(key)!r}, the {v.name} "
                                      f"bundle has {getattr(v, key)!r}", index=index, field=v.field,
                                      fix=f"re-embed everything with `--rebuild`, or pass the {v.name} bundle "
                                          f"{index} was built with")


def hybrid_search_pipeline_body(weights: tuple[float, float] = (0.3, 0.7),
                                technique: str = "min_max") -> dict[str, object]:
    """A neural-search ``normalization-processor`` search pipeline for the native ``hybrid`` query.

    Args:
        weights: weights of the BM25 and the kNN sub-queries, in that order.
        technique: score normalization, ``min_max`` or ``l2``.

    Returns:
        The body of ``PUT /_search/pipeline/<name>``.
    """
    return {"description": "osreco hybrid: normalize BM25 and kNN scores, then combine",
            "phase_results_processors": [{"normalization-processor": {
                "normalization": {"technique": technique},
                "combination": {"technique": "arithmetic_mean",
                                "parameters": {"weights": list(weights)}}}}]}
