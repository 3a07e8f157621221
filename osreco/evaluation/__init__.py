"""osreco.evaluation: offline evaluation (``osreco eval``), IR metrics, and the promotion gate it feeds.

``metrics`` holds the ranking metrics every part reports; ``run`` drives the full evaluation
through the real sidecar; ``gate`` promotes a candidate bundle only when it is not worse.
"""

__all__: list[str] = []
