"""osreco.ingest: catalogs into OpenSearch k-NN indexes, the index contract, the bulk writer."""

from osreco.ingest.bulk import BulkReport, RetryPolicy, bulk_write, retry_call
from osreco.ingest.catalog import (
    CatalogItem,
    FieldMap,
    count_rows,
    detect_format,
    read_catalog,
    read_rows,
    validate_row,
)
from osreco.ingest.checkpoint import Checkpoint, DeadLetters, catalog_fingerprint
from osreco.ingest.fixtures import ECOMMERCE_FIELDS, ECOMMERCE_QUERIES, ecommerce_catalog_path, read_ecommerce_items
from osreco.ingest.index_spec import IndexSpec, hybrid_search_pipeline_body
from osreco.ingest.movielens import MOVIELENS_FIELDS, movielens_items_path, read_movielens_items
from osreco.ingest.pipeline import install_pipeline, pipeline_body
from osreco.ingest.rebuild import (
    RebuildConfig,
    RebuildResult,
    alias_indexes,
    ensure_index,
    rebuild_index,
    swap_alias,
    warmup_knn,
)
from osreco.ingest.writer import IngestReport, WriteConfig, index_items

__all__ = ["CatalogItem", "FieldMap", "count_rows", "detect_format", "read_catalog", "read_rows", "validate_row",
           "Checkpoint", "DeadLetters", "catalog_fingerprint",
           "ECOMMERCE_FIELDS", "ECOMMERCE_QUERIES", "MOVIELENS_FIELDS", "ecommerce_catalog_path",
           "movielens_items_path", "read_ecommerce_items", "read_movielens_items",
           "IndexSpec", "hybrid_search_pipeline_body", "install_pipeline", "pipeline_body",
           "RebuildConfig", "RebuildResult", "alias_indexes", "ensure_index", "rebuild_index", "swap_alias",
           "warmup_knn", "IngestReport", "WriteConfig", "index_items", "retry_call", "BulkReport", "RetryPolicy",
           "bulk_write"]
