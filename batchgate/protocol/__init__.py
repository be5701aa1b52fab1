"""Wire models (pydantic): the shapes of the HTTP API. Imports nothing else from batchgate."""
