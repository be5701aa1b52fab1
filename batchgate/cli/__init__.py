"""The command line. `serve` and `worker` wire the app; `keys` administers the data dir."""
