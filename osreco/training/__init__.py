"""osreco.training: fine-tune the encoder and train the reranker from feedback (needs the ``export`` extra).

torch and transformers are imported inside the functions that train, never at import time.
The trained folders go through ``osreco.exporter`` to become bundles.
"""

__all__: list[str] = []
