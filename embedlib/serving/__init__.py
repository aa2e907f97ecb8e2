"""Serving a published version: the embedding index (CuPy or NumPy) and its HTTP service."""
from embedlib.serving.backend import Backend, BackendError, select_backend
from embedlib.serving.index import EmbeddingIndex, LookupResult, ServingError, TopKResult, UnknownIdError, index_options
from embedlib.serving.vectors import VectorsError, arrays_from_arrow, read_embeddings

__all__ = ["Backend", "BackendError", "EmbeddingIndex", "LookupResult", "ServingError",
           "TopKResult", "UnknownIdError", "VectorsError", "arrays_from_arrow",
           "index_options", "read_embeddings", "select_backend"]
