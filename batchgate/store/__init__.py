"""Storage: the SQLite store, the local blob store and schema migrations.

The `Store` and `BlobStore` protocols they implement live in `batchgate.core.ports`,
so that core depends on the protocols and never on this package.
"""

from batchgate.core.ports import BlobStore, Store
from batchgate.store.blobs import LocalBlobStore
from batchgate.store.sqlite import SQLiteStore

__all__ = ["BlobStore", "LocalBlobStore", "SQLiteStore", "Store"]
