"""osreco.plugin: the Flask sidecar — intent, hybrid retrieval, fusion, explanations, events."""

__all__: list[str] = []
