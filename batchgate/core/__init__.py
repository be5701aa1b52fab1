"""Domain logic: models, errors, validation, the batch lifecycle and the worker."""
