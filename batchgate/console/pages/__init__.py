"""The console's pages, one module per area; each calls the same core services as the API."""
