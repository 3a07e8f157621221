"""osreco.ingest: catalogs into OpenSearch k-NN indexes, the index contract, the bulk writer."""

__all__: list[str] = []

from osreco.ingest.catalog import (CatalogItem, FieldMap, count_rows, detect_format, read_catalog,  # noqa: E402
                                   read_rows, validate_row)
from osreco.ingest.checkpoint import Checkpoint, DeadLetters, catalog_fingerprint  # noqa: E402
from osreco.ingest.fixtures import (ECOMMERCE_FIELDS, ECOMMERCE_QUERIES, MOVIELENS_FIELDS,  # noqa: E402
                                    ecommerce_catalog_path, movielens_items_path, read_ecommerce_items,
                                    read_movielens_items)
from osreco.ingest.index_spec import IndexSpec, hybrid_search_pipeline_body  # noqa: E402
from osreco.ingest.pipeline import install_pipeline, pipeline_body  # noqa: E402
from osreco.ingest.rebuild import (RebuildConfig, RebuildResult, alias_indexes, ensure_index,  # noqa: E402
                                   rebuild_index, swap_alias, warmup_knn)
from osreco.ingest.writer import IngestReport, WriteConfig, index_items, retry_call  # noqa: E402

__all__ += ["CatalogItem", "FieldMap", "count_rows", "detect_format", "read_catalog", "read_rows", "validate_row",
            "Checkpoint", "DeadLetters", "catalog_fingerprint",
            "ECOMMERCE_FIELDS", "ECOMMERCE_QUERIES", "MOVIELENS_FIELDS", "ecommerce_catalog_path",
            "movielens_items_path", "read_ecommerce_items", "read_movielens_items",
            "IndexSpec", "hybrid_search_pipeline_body", "install_pipeline", "pipeline_body",
            "RebuildConfig", "RebuildResult", "alias_indexes", "ensure_index", "rebuild_index", "swap_alias",
            "warmup_knn", "IngestReport", "WriteConfig", "index_items", "retry_call"]
