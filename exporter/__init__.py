"""osreco.exporter: fine-tuned transformers -> validated ONNX bundles, and the Encoder that runs them."""

__all__: list[str] = []
