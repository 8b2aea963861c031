"""Gateway adapter types by the name used in the configuration's `type` field."""

from __future__ import annotations

import aiohttp

from gateway_adapters.base import GatewayAdapter, GatewayConfig
from gateway_adapters.gatewayapi import GatewayApiAdapter
from gateway_adapters.smpp import SmppAdapter
from gateway_adapters.twilio import TwilioAdapter

ADAPTERS: dict[str, type] = {
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
    adapter: GatewayAdapter = cls(config, callback_url, session)
    return adapter
