"""Named text encoders: the default one (``embedding``) and one more per name (``embedding_<name>``).

Items get one vector per encoder: ``embedding`` from the default (English) bundle and, e.g.,
``embedding_zh`` from a Chinese one. ``TextEncoders`` looks like one encoder to the writer
(``encode_items`` gives the default's vectors) and adds ``encode_fields`` (every field's).

Example:
    >>> encoders = TextEncoders(Encoder("bundles/minilm"), {"zh": Encoder("bundles/bge-zh")})
    >>> sorted(encoders.encode_fields(["红色跑鞋"]))
    ['embedding', 'embedding_zh']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from osreco.ingest.errors import ConfigError
from osreco.ingest.index_spec import NamedVector

DEFAULT_FIELD = "embedding"
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")


def vector_field(name: str) -> str:
    """The item field an encoder's vectors go to: ``embedding_<name>``."""
    return f"{DEFAULT_FIELD}_{name}"


class TextEncoders:
    """The default encoder plus named ones; one vector field per encoder.

    Args:
        default: the default (English) Encoder, written to ``embedding``.
        named: name -> Encoder (e.g. ``{"zh": bge}``), written to ``embedding_<name>``.
    Raises:
        ConfigError: a name that is not a short lowercase word, or an encoder that is not an
            embedding bundle.
    """

    def __init__(self, default: Any, named: Mapping[str, Any] | None = None):
        self.default = default
        self.named = dict(named or {})
        for name, enc in self.named.items():
            if not _NAME_RE.match(name):
                raise ConfigError(f"encoder name {name!r} is not a short lowercase word", field="--bundle-" + name,
                                  fix="name encoders by language: zh, ja, ...")
            if getattr(enc.manifest, "task", "embedding") != "embedding":
                raise ConfigError(f"the {name} bundle is a {enc.manifest.task} bundle, not an encoder",
                                  field=f"--bundle-{name}", fix="pass a text embedding bundle")

    @property
    def dim(self) -> int:
        """The default encoder's dimension."""
        return int(self.default.dim)

    @property
    def artifact_id(self) -> str:
        """The default encoder's bundle id (the index's ``_meta.artifact_id``)."""
        return str(self.default.artifact_id)

    @property
    def manifest(self) -> Any:
        """The default encoder's manifest."""
        return self.default.manifest

    @property
    def content_id(self) -> str:
        """What an item's ``content_hash`` is salted with: every encoder's bundle id, so a new
        named bundle re-embeds the items as a new default one does."""
        if not self.named:
            return self.artifact_id
        parts = [self.artifact_id] + [f"{n}={e.artifact_id}" for n, e in sorted(self.named.items())]
        return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()

    @property
    def fields(self) -> tuple[str, ...]:
        """Every vector field written: ``embedding`` first."""
        return (DEFAULT_FIELD, *(vector_field(n) for n in sorted(self.named)))

    def vectors(self) -> tuple[NamedVector, ...]:
        """The named encoders as the index spec's extra vector fields."""
        return tuple(NamedVector(name=n, dim=int(e.dim), artifact_id=str(e.artifact_id),
                                 model=str(getattr(e.manifest, "model_name", "")),
                                 language=str(getattr(e.manifest, "language", "") or n),
                                 normalize=bool(getattr(e.manifest, "normalize", True)))
                     for n, e in sorted(self.named.items()))

    def encode_items(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """The default encoder's vectors."""
        return self.default.encode_items(texts, batch_size=batch_size)

    def encode_fields(self, texts: list[str], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Every encoder's vectors, by field."""
        out = {DEFAULT_FIELD: self.default.encode_items(texts, batch_size=batch_size)}
        for name, enc in sorted(self.named.items()):
            out[vector_field(name)] = enc.encode_items(texts, batch_size=batch_size)
        return out


def encode_fields(encoder: Any, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
    """Vectors by field from a ``TextEncoders`` or from a plain Encoder (``embedding`` only)."""
    if hasattr(encoder, "encode_fields"):
        return dict(encoder.encode_fields(texts, batch_size=batch_size))
    return {DEFAULT_FIELD: encoder.encode_items(texts, batch_size=batch_size)}


def fields_of(encoder: Any) -> tuple[str, ...]:
    """The vector fields an encoder writes (``("embedding",)`` for a plain Encoder)."""
    return tuple(getattr(encoder, "fields", (DEFAULT_FIELD,)))


def content_id(encoder: Any) -> str:
    """What ``content_hash`` is salted with: the composite id, or the plain artifact id."""
    return str(getattr(encoder, "content_id", encoder.artifact_id))
