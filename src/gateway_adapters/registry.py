"""Gateway adapter types by the name used in the configuration's `type` field."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import aiohttp

from gateway_adapters.base import AdapterLimits, GatewayAdapter, GatewayConfig
from gateway_adapters.gatewayapi import GatewayApiAdapter
from gateway_adapters.smpp import SmppAdapter
from gateway_adapters.twilio import TwilioAdapter

log = logging.getLogger(__name__)

ADAPTERS: dict[str, Any] = {
    GatewayApiAdapter.type: GatewayApiAdapter,
    SmppAdapter.type: SmppAdapter,
    TwilioAdapter.type: TwilioAdapter,
}

# Static check that each registered class really fulfils the protocol (mypy verifies this line).
_CONFORMS: tuple[type[GatewayAdapter], ...] = (GatewayApiAdapter, TwilioAdapter, SmppAdapter)


class UnknownGatewayType(KeyError, ValueError):
    """Raised for a `type` no adapter is registered for (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:
        # KeyError would print the repr of the message; keep it readable.
        return str(self.args[0]) if self.args else ""


def known_types() -> list[str]:
    """The adapter type names, sorted."""
    return sorted(ADAPTERS)


def create_adapter(
    config: GatewayConfig, callback_url: str, session: aiohttp.ClientSession | None = None
) -> GatewayAdapter:
    """Build the adapter for `config.type`."""
    try:
        cls = ADAPTERS[config.type]
    except KeyError:
        raise UnknownGatewayType(
            f"gateway {config.name!r}: unknown type {config.type!r}; "
            f"known types: {', '.join(known_types())}"
        ) from None
    adapter: GatewayAdapter = cls(capped(config, cls.limits), callback_url, session)
    return adapter


def capped(config: GatewayConfig, limits: AdapterLimits) -> GatewayConfig:
    """The configuration within what the provider allows (logged when it had to be lowered).
    Recipients per request stay the dispatcher's batch size: an adapter whose provider takes one
    recipient per request sends a batch as that many requests."""
    changes: dict[str, Any] = {}
    if limits.concurrent_requests is not None and config.concurrency > limits.concurrent_requests:
        changes["concurrency"] = limits.concurrent_requests
    if (
        limits.messages_per_second is not None
        and config.rate_per_second > limits.messages_per_second
    ):
        changes["rate_per_second"] = limits.messages_per_second
    if changes:
        log.warning(
            "gateway %s: configuration lowered to the provider's limits: %s", config.name, changes
        )
        return dataclasses.replace(config, **changes)
    return config
