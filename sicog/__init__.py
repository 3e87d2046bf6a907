"""SICOG: self-improving systematic cognition for multimodal LLMs."""
__version__ = "0.1.0"
