"""The Store contract for keys' scopes, allowed models and expiry, and projects, on every
store."""

from __future__ import annotations

from dataclasses import replace

from contract import test_store_contract as suite
from contract.test_store_contract import NOW

from batchgate.core.models import DEFAULT_SCOPES, ApiKey
from batchgate.core.ports import Store

store = suite.store  # the fixture: each test runs on every store


def test_a_key_keeps_its_scopes_models_and_expiry_and_they_can_be_updated(store: Store) -> None:
    project = store.ensure_project("acme", NOW)
    plain = ApiKey("key_1", project.id, "ci", "bg-abc", NOW)
    store.add_api_key(plain, "hash-1")
    admin = ApiKey("key_2", project.id, "ops", "bg-def", NOW + 1, scopes=("admin", "read"), allowed_models=("m1", "m2"))
    store.add_api_key(replace(admin, expires_at=NOW + 60), "hash-2")
    found = store.find_api_key("hash-1")
    assert found is not None and found.scopes == DEFAULT_SCOPES and found.allowed_models is None
    assert found.expires_at is None
    found = store.find_api_key("hash-2")
    assert found is not None and (found.scopes, found.allowed_models, found.expires_at) == (
        ("admin", "read"),
        ("m1", "m2"),
        NOW + 60,
    )
    assert store.update_api_key(replace(plain, name="batch-only", scopes=("batch",), allowed_models=()))
    updated = store.get_api_key("key_1")
    assert updated is not None and (updated.name, updated.scopes, updated.allowed_models) == (
        "batch-only",
        ("batch",),
        (),
    )
    assert updated.project_name == "acme"
    assert not store.update_api_key(replace(plain, id="key_404"))
    assert store.revoke_api_key("key_1", NOW + 2)
    assert not store.update_api_key(replace(plain, name="again")), "a revoked key is not changed"
    revoked = store.get_api_key("key_1")
    assert revoked is not None and revoked.revoked_at == NOW + 2 and revoked.name == "batch-only"
    assert store.get_api_key("key_404") is None


def test_projects_are_listed_by_name(store: Store) -> None:
    for name in ("zeta", "acme", "mid"):
        store.ensure_project(name, NOW)
    assert [p.name for p in store.list_projects()] == ["acme", "mid", "zeta"]


def test_a_key_keeps_its_routing_profile(store: Store) -> None:
    project = store.ensure_project("acme", NOW)
    key = ApiKey("key_p", project.id, "p", "bg-pro", NOW, routing_profile="small")
    store.add_api_key(key, "hash-p")
    found = store.find_api_key("hash-p")
    assert found is not None and found.routing_profile == "small"
    assert store.update_api_key(replace(key, routing_profile=None))
    cleared = store.get_api_key("key_p")
    assert cleared is not None and cleared.routing_profile is None
    assert store.update_api_key(replace(key, routing_profile="big"))
    assert [k.routing_profile for k in store.list_api_keys() if k.id == "key_p"] == ["big"]
