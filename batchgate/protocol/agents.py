"""Wire shapes of the Swarms-compatible agent API (`/v1/agent/...`, `/v1/swarm/...`).

Field names follow the official `swarms-client` package (0.8.x), so its requests parse
here and its callers read our responses unchanged. Requests tolerate fields this
gateway does not use (Swarms clients send more than they need, e.g. `mcp_url`,
`streaming_on`); `unknown_fields()` names them so the caller can log a warning.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    """Accepts and keeps unknown fields (so they can be named in a warning)."""

    model_config = ConfigDict(extra="allow")

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class AgentSpec(_Lenient):
    agent_name: str = Field(min_length=1)
    description: str | None = None
    system_prompt: str | None = None
    model_name: str = "default"
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    role: str | None = None
    max_loops: int = Field(default=1, ge=1, le=32)
    auto_generate_prompt: bool = False
    tools_list_dictionary: list[dict[str, Any]] | None = None
    # extra sampling arguments for the model (top_p, seed, stop, response_format, ...)
    llm_args: dict[str, Any] | None = None


class Message(BaseModel):
    role: str
    content: Any


class AgentCompletion(_Lenient):
    agent_config: AgentSpec
    task: str = Field(min_length=1)
    history: dict[str, Any] | list[Message] | None = None
    img: str | None = None
    imgs: list[str] | None = None
    tools_enabled: bool = True


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class AgentOutput(BaseModel):
    """One turn of an agent: its message, and the tool calls it asked for (the gateway
    does not execute tools; the caller does)."""

    role: str
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class AgentError(BaseModel):
    code: str
    message: str


class AgentCompletionResponse(BaseModel):
    job_id: str
    success: bool
    name: str | None = None
    description: str | None = None
    temperature: float | None = None
    outputs: list[AgentOutput] = []
    usage: Usage = Usage()
    cost: float = 0.0
    timestamp: str
    error: AgentError | None = None


BatchState = Literal["queued", "in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled", "expired"]


class AgentBatchResponse(BaseModel):
    """An agent batch: every record's result in input order once it has ended; while it
    runs, `results` is empty and the counts show progress."""

    batch_id: str
    status: BatchState
    total_requests: int
    completed_requests: int
    failed_requests: int
    execution_time: float
    timestamp: str
    results: list[AgentCompletionResponse] = []


class AgentBatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AgentBatchResponse]
    has_more: bool
    last_id: str | None


SwarmType = Literal["SequentialWorkflow", "ConcurrentWorkflow", "MixtureOfAgents", "MajorityVoting"]
SWARM_TYPES: tuple[str, ...] = ("SequentialWorkflow", "ConcurrentWorkflow", "MixtureOfAgents", "MajorityVoting")


class SwarmSpec(_Lenient):
    name: str | None = None
    description: str | None = None
    agents: list[AgentSpec] = Field(min_length=1)
    swarm_type: str = "SequentialWorkflow"
    task: str = Field(min_length=1)
    max_loops: int = Field(default=1, ge=1, le=1)
    rules: str | None = None


class AgentUsage(Usage):
    cost: float = 0.0


class SwarmUsage(Usage):
    cost: float = 0.0
    per_agent: dict[str, AgentUsage] = {}


class SwarmCompletionResponse(BaseModel):
    job_id: str
    status: Literal["success", "failed"]
    swarm_name: str | None = None
    description: str | None = None
    swarm_type: str
    output: Any = None
    number_of_agents: int
    execution_time: float
    usage: SwarmUsage = SwarmUsage()
    timestamp: str
    error: AgentError | None = None


class SwarmBatchResponse(BaseModel):
    """A swarm batch, as `AgentBatchResponse` (results: one per swarm, in input order)."""

    batch_id: str
    status: BatchState
    total_requests: int
    completed_requests: int
    failed_requests: int
    execution_time: float
    timestamp: str
    results: list[SwarmCompletionResponse] = []


class AsyncBatchAccepted(BaseModel):
    """The answer to a batch POST with `Prefer: respond-async`."""

    batch_id: str
    status: BatchState
    total_requests: int


class ModelsAvailable(BaseModel):
    success: bool = True
    models: list[str]


class SwarmsAvailable(BaseModel):
    status: Literal["success"] = "success"
    swarms: list[str]


class RateWindow(BaseModel):
    count: int
    limit: int | None  # None: this gateway sets no limit on the window
    remaining: int | None
    exceeded: bool
    reset_time: str


class RateLimits(BaseModel):
    success: bool = True
    rate_limits: dict[str, RateWindow]
    tier: str = "self-hosted"
    timestamp: str


class LogEntry(BaseModel):
    id: str
    api_key: str
    data: dict[str, Any]
    created_at: str


class SwarmLogs(BaseModel):
    status: Literal["success"] = "success"
    count: int
    logs: list[LogEntry]
