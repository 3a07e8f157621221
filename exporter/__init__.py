"""osreco.exporter: fine-tuned transformers -> validated ONNX bundles, and the Encoder that runs them.

Importing this package loads neither torch nor transformers: only ``export_model`` does,
when called.
"""

from osreco.exporter.encoder import Encoder
from osreco.exporter.errors import BundleError, ConfigError, ExporterError, ModelDirError, ParityError, RuntimeEnvError
from osreco.exporter.export import ExportOptions, export_model
from osreco.exporter.manifest import FORMAT_VERSION, Manifest, load_manifest

__all__ = [
    "Encoder", "ExportOptions", "export_model", "Manifest", "load_manifest", "FORMAT_VERSION",
    "ExporterError", "ConfigError", "ModelDirError", "BundleError", "ParityError", "RuntimeEnvError",
]
