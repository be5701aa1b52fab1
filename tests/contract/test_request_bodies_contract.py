"""The Store contract for stored request bodies (core/bodies.py) on every store: a
project's opt-in (off, 16 KiB, unless set) and the bodies kept by ledger row."""

from __future__ import annotations

from contract import test_store_contract as suite
from contract.test_store_contract import NOW

from batchgate.core.bodies import DEFAULT_BODY_CAP, BodySettings, RequestBodies
from batchgate.core.ledger import SYNC, LedgerEntry
from batchgate.core.ports import Store

store = suite.store  # the fixture: each test runs on every store


def test_a_project_opts_in_to_stored_bodies(store: Store) -> None:
    project = store.ensure_project("acme", NOW)
    assert store.project_bodies(project.id) == BodySettings(False, DEFAULT_BODY_CAP)
    assert store.set_project_bodies(project.id, BodySettings(True, 100))
    assert store.project_bodies(project.id) == BodySettings(True, 100)
    assert store.set_project_bodies(project.id, BodySettings(False, 200))
    assert store.project_bodies(project.id) == BodySettings(False, 200)
    assert not store.set_project_bodies("proj_none", BodySettings(True, 100))
    assert store.project_bodies("proj_none") == BodySettings()


def test_bodies_are_kept_by_ledger_row(store: Store) -> None:
    project = store.ensure_project("acme", NOW)
    entry = LedgerEntry(SYNC, project.id, "/v1/chat/completions", NOW, NOW + 1)
    store.add_ledger_entry(entry)
    assert entry.id > 0 and store.get_request_bodies(entry.id) is None
    kept = RequestBodies('{"model": "m"}', "é" * 10, request_truncated=False, response_truncated=True)
    store.add_request_bodies(entry.id, kept)
    assert store.get_request_bodies(entry.id) == kept
    assert store.get_request_bodies(entry.id + 1) is None
