"""SMS length rules, shared with the adapters (gateway_adapters.gsm7)."""

from __future__ import annotations

from gateway_adapters.gsm7 import is_gsm7, segment_count

__all__ = ["is_gsm7", "segment_count"]
