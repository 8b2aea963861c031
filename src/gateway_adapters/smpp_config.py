"""An SMPP gateway's `[[gateways]]` entry read: where the SMSC is, the account, the sender."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway_adapters.base import (
    GatewayConfig,
    GatewayMisconfigured,
)
from gateway_adapters.smpp_codec import (
    NPI_ISDN,
    NPI_UNKNOWN,
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
)

DEFAULT_PORT = 2775


class SmppConfigError(GatewayMisconfigured, ValueError):
    """The `[[gateways]]` entry cannot describe an SMPP connection."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    system_id: str
    password: str
    source_addr: str
    source_ton: int
    source_npi: int


def parse_config(config: GatewayConfig) -> Endpoint:
    """Host, port, credentials and source address from a gateway entry; `SmppConfigError`."""
    where = f"gateway {config.name!r}"
    url = urlsplit(config.base_url)
    if url.scheme != "smpp" or not url.hostname:
        raise SmppConfigError(f"{where}: base_url must look like smpp://host:port")
    try:
        port = url.port or DEFAULT_PORT
    except ValueError:
        raise SmppConfigError(f"{where}: base_url has an invalid port") from None
    system_id, sep, password = config.token.partition(":")
    if not sep or not system_id:
        raise SmppConfigError(f"{where}: token must be 'system_id:password'")
    # SMPP 3.4 limits (without the NUL): system_id 15, password 8 octets.
    if len(system_id.encode("latin-1", "replace")) > 15:
        raise SmppConfigError(f"{where}: system_id is longer than 15 characters")
    if len(password.encode("latin-1", "replace")) > 8:
        raise SmppConfigError(f"{where}: password is longer than 8 characters")
    sender = config.sender.strip()
    digits = sender.removeprefix("+")
    if digits.isascii() and digits.isdigit():
        source, ton, npi = digits, TON_INTERNATIONAL, NPI_ISDN
    else:
        source, ton, npi = sender, TON_ALPHANUMERIC, NPI_UNKNOWN
    if not source or len(source) > 20:
        raise SmppConfigError(f"{where}: sender must be 1 to 20 characters")
    return Endpoint(url.hostname, port, system_id, password, source, ton, npi)
