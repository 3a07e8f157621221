"""osreco.ingest: catalogs into OpenSearch k-NN indexes, the index contract, collaborative factors."""

__all__: list[str] = []

# Catalogs, the index contract, the bulk writer, rebuilds, the ingest pipeline, fixtures (issue 4).
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

# Collaborative filtering, events and privacy (issue 5).
from osreco.ingest.cf import CFConfig, CFModel, evaluate, time_split, train_models  # noqa: E402
from osreco.ingest.cf_store import (StoreConfig, read_meta, read_user_vector, refresh_user_vector,  # noqa: E402
                                    update_user_vector, write_item_factors, write_meta, write_user_vectors)
from osreco.ingest.events import Event, expire_events, forget, from_ubi, write_events  # noqa: E402
from osreco.ingest.interactions import Interaction, ReadConfig, read_interactions  # noqa: E402
from osreco.ingest.privacy import PrivacyConfig, pseudonymize  # noqa: E402

__all__ += ["CFConfig", "CFModel", "evaluate", "time_split", "train_models",
            "StoreConfig", "read_meta", "read_user_vector", "refresh_user_vector", "update_user_vector",
            "write_item_factors", "write_meta", "write_user_vectors",
            "Event", "expire_events", "forget", "from_ubi", "write_events",
            "Interaction", "ReadConfig", "read_interactions", "PrivacyConfig", "pseudonymize"]
