"""SMS length rules, shared with the adapters (gateway_adapters.gsm7)."""

from __future__ import annotations

from gateway_adapters.gsm7 import SmsLength, is_gsm7, measure, segment_count

__all__ = ["SmsLength", "is_gsm7", "measure", "segment_count"]
