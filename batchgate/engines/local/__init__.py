"""The embedded engine: GGUF models from a verified catalog, run in-process by llama.cpp."""
