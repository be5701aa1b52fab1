"""Backends that run request lines: the `Backend` protocol (defined in `core.ports` so that
core depends only on the protocol) and, in later releases, the local llama.cpp engine and
the OpenAI-compatible upstream engine. The scripted test backend lives in `batchgate.testing`."""

from batchgate.core.ports import Backend, BackendRequest, BackendResponse

__all__ = ["Backend", "BackendRequest", "BackendResponse"]
