"""osreco: personalized, language-aware search and recommendation for OpenSearch.

Subpackages: ``osreco.exporter`` (ONNX bundles and the Encoder), ``osreco.ingest``
(catalogs into k-NN indexes, collaborative factors) and ``osreco.plugin`` (the Flask
sidecar). ``osreco.node`` runs the local OpenSearch node used by the demo and the tests.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
