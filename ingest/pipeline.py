"""The OpenSearch ingest pipeline for items that other clients write (Logstash, Data Prepper, apps).

It trims and lowercases the facets, fills defaults (``item_id`` from ``_id``, ``popularity``
0), stamps ``indexed_at``, and — when a registered ml-commons model id is given — adds a
``text_embedding`` processor so documents that arrive without a vector get one in the cluster.

Example:
    >>> body = pipeline_body(spec.facets, model_id="aBcD123")
    >>> install_pipeline(client, "osreco-items", body)
"""

from __future__ import annotations

from typing import Any

from opensearchpy import OpenSearch

from osreco.ingest.errors import ConfigError
from osreco.ingest.index_spec import DEFAULT_FACETS

DEFAULT_PIPELINE = "osreco-items"
EMBED_SOURCE_FIELD = "_osreco_embed_text"


def pipeline_body(facets: tuple[str, ...] = DEFAULT_FACETS, model_id: str | None = None,
                  defaults: dict[str, object] | None = None,
                  embed_fields: tuple[str, ...] = ("title", "text")) -> dict[str, Any]:
    """Build the ingest pipeline body.

    Args:
        facets: keyword facets to trim and lowercase (``IndexSpec.facets``).
        model_id: a deployed ml-commons text-embedding model; adds a ``text_embedding`` processor.
        defaults: field -> value set when the field is missing (default ``{"popularity": 0}``).
        embed_fields: fields joined into the text that the in-cluster model embeds.

    Returns:
        The body of ``PUT /_ingest/pipeline/<name>``.

    Raises:
        ConfigError: an empty model id or no embed fields.
    """
    if model_id is not None and not model_id.strip():
        raise ConfigError("model_id is empty", field="--model-id", fix="pass the id printed by the model registration")
    processors: list[dict[str, object]] = [
        {"set": {"field": "item_id", "value": "{{_id}}", "override": False}},
    ]
    for facet in facets:
        processors.append({"trim": {"field": facet, "ignore_missing": True}})
        processors.append({"lowercase": {"field": facet, "ignore_missing": True}})
    for field, value in (defaults if defaults is not None else {"popularity": 0}).items():
        processors.append({"set": {"field": field, "value": value, "override": False}})
    processors.append({"set": {"field": "indexed_at", "value": "{{{_ingest.timestamp}}}"}})
    if model_id:
        processors.extend(_embedding_processors(model_id.strip(), embed_fields))
    return {"description": "osreco: normalize items (facets, defaults, timestamps"
                           f"{', in-cluster embedding' if model_id else ''})",
            "processors": processors}


def _embedding_processors(model_id: str, embed_fields: tuple[str, ...]) -> list[dict[str, object]]:
    """Join the text fields, embed them with the model when no vector came, drop the helper field."""
    if not embed_fields:
        raise ConfigError("embed_fields is empty", field="embed_fields", fix="pass e.g. ('title', 'text')")
    joined = ". ".join(f"{{{{{name}}}}}" for name in embed_fields)
    missing = "ctx.embedding == null"
    return [
        {"set": {"field": EMBED_SOURCE_FIELD, "value": joined, "if": missing}},
        {"text_embedding": {"model_id": model_id, "field_map": {EMBED_SOURCE_FIELD: "embedding"},
                            "if": missing}},
        {"remove": {"field": EMBED_SOURCE_FIELD, "ignore_missing": True}},
    ]


def install_pipeline(client: OpenSearch, name: str, body: dict[str, object], default_for: str | None = None) -> None:
    """Create or replace the pipeline; optionally make it the default pipeline of an index/alias.

    Args:
        client: opensearch-py client.
        name: pipeline id.
        body: from ``pipeline_body``.
        default_for: an index or alias whose ``index.default_pipeline`` becomes ``name``.
    """
    client.ingest.put_pipeline(id=name, body=body)
    if default_for:
        client.indices.put_settings(index=default_for, body={"index": {"default_pipeline": name}})
