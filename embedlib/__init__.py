"""embedlib: item embeddings that stay stable from one version to the next."""

__version__ = "0.1.0"
