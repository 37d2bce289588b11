"""llmctl: from raw text to a trained, evaluated and usable LSTM language model, one YAML config per experiment.

This module only carries the version: importing it must never import TensorFlow.
"""

__version__ = "0.1.0"
