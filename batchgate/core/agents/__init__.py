"""Agents and swarms (the Swarms-compatible API), compiled into ordinary request lines.

- `compile`: an agent completion or a swarm spec → one `/v1/chat/completions` line body.
- `backend`: `AgentBackend`, the Backend decorator that runs the lines needing more than
  one model call (an agent's `max_loops` turns, a swarm's agents) on the backend it wraps.
- `swarms`: the swarm strategies.
- `runs`: `AgentRuns`, the service: single completions now, and batches of records that
  are ordinary batches underneath (durable, cancellable, listable), read back in order.
"""
