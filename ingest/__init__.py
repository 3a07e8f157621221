"""osreco.ingest: catalogs into OpenSearch k-NN indexes, the index contract, collaborative factors."""

__all__: list[str] = []
