"""Stripe's `POST /v1/billing/meter_events`, through the official `stripe` library: the
form-encoded event (`payload[stripe_customer_id]`, `payload[value]`, ...), the secret key
as `Authorization: Bearer sk_...`, and the event's identifier as the Idempotency-Key.

The library's own retries are off (`max_network_retries=0`): the exporter retries, so
that every attempt is recorded and a backoff survives a restart.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import time
from collections.abc import Mapping
from typing import Any

import stripe

from batchgate.core.billing import BillingEvent
from batchgate.core.billing_export import SendResult

# the library logs every request at INFO; the exporter records each attempt itself
logging.getLogger("stripe").setLevel(logging.WARNING)


class StripeMeterEvents:
    """A `MeterEventSender` on Stripe's API at `api_base` (a fake one in tests)."""

    def __init__(self, api_key: str, api_base: str, timeout: float = 30.0):
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base}, max_network_retries=0, http_client=self._http
        )

    async def send(self, event: BillingEvent) -> SendResult:
        try:
            answer = await self._client.v1.billing.meter_events.create_async(
                event.form(),  # type: ignore[arg-type]  # a plain dict of the documented fields
                {"idempotency_key": event.identifier},
            )
        except stripe.StripeError as exc:
            status = exc.http_status if isinstance(exc.http_status, int) else None
            return SendResult(status, _message(exc), _retry_after(exc.headers or {}), exc.request_id)
        response = answer.last_response
        return SendResult(response.code if response else 200, request_id=response.request_id if response else None)

    async def aclose(self) -> None:
        await self._http.close_async()


def _message(exc: stripe.StripeError) -> str:
    """Stripe's error as `code: message` (the body's, else the library's)."""
    error = (exc.json_body or {}).get("error") if isinstance(exc.json_body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        code = error.get("code") or error.get("type")
        return f"{code}: {error['message']}" if code else str(error["message"])
    return exc.user_message or str(exc) or exc.__class__.__name__


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), if any."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    with contextlib.suppress(ValueError, TypeError):
        return max(0.0, float(value))
    with contextlib.suppress(ValueError, TypeError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None
