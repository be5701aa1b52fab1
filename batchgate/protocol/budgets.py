"""GET /v1/budget: a key's budget and what it spent this period (a batchgate API)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class BudgetStatus(BaseModel):
    object: Literal["budget"] = "budget"
    key_id: str
    period: Literal["day", "week", "month", "total"] = Field(description="Calendar periods in UTC; total never renews.")
    budget_usd: float | None = Field(description="The hard limit per period: spending stops there (None: none).")
    soft_budget_usd: float | None = Field(description="Reported when passed; spending goes on.")
    spent_usd: float = Field(description="The key's cost this period (the ledger's, batch discount applied).")
    remaining_usd: float | None
    soft_reached: bool
    exhausted: bool = Field(description="Synchronous requests get 429 insufficient_quota; batches pause.")
    period_start: int | None = Field(description="Epoch seconds (None for a total).")
    period_end: int | None = Field(description="When the spend renews (None for a total).")
