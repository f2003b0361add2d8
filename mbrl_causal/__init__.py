"""mbrl-causal: model-based RL with causal world models."""

__version__ = "0.1.0"
