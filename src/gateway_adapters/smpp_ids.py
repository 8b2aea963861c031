"""SMPP message ids: the key a delivery is stored under, and how a receipt's id finds it.

SMSCs write a message's id in submit_sm_resp one way and in the receipt text another: hex in one
and decimal in the other, zero-padded or not, in either case (Kannel's per-link `msg-id-type` is
there for this). Our rules:

- A delivery is stored under `message_key` of its submit_sm_resp id: the id as the SMSC wrote it,
  trimmed, in lower case, and without leading zeros when it consists of hex digits only
  ('0A3F0202' -> 'a3f0202'). Storing needs no knowledge of the SMSC's habits, so every process
  stores every id the same way.
- A receipt's receipted_message_id TLV names the id as submit_sm_resp did (SMPP 3.4 section
  5.3.2.12): its key is `message_key` of it.
- A receipt's text id is written in the gateway's receipt base, and the key is in its submit base:
  the *id style* is that pair of bases, (10, 10), (16, 16), (16, 10) or (10, 16) ('0' for opaque
  ids compared as written). Where a text id gives the same key under every style still possible
  (an opaque id, a single digit, or one style left), that is its key. Otherwise the style decides.

`IdStyle` is what a gateway's adapter knows of its style: the bases configured
(`submit_id_base`, `receipt_id_base`), facts that rule styles out (a hex letter in a submit_sm_resp
id rules out a decimal submit base, one in a receipt text id a decimal receipt base), and
evidence: receipts whose id names a message we sent under one reading only. Three such receipts
in agreement, with the facts, fix the style for good (`learned`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_HEX = re.compile(r"[0-9A-Fa-f]+")
_LETTER = re.compile(r"[A-Fa-f]")

Style = tuple[int, int]  # (submit base, receipt base)
AS_WRITTEN: Style = (0, 0)  # opaque ids: compared as written (case and padding aside)
STYLES: frozenset[Style] = frozenset({(10, 10), (16, 16), (16, 10), (10, 16)})
EVIDENCE_NEEDED = 3  # agreeing receipts that fix a learned style


def message_key(raw: str) -> str:
    """The key an SMSC message id is stored and matched under: trimmed, lower case, and without
    leading zeros if it is hex digits only ('0' stays '0')."""
    value = raw.strip()
    if _HEX.fullmatch(value):
        return value.lstrip("0").lower() or "0"
    return value.lower()


def key_in_style(text_id: str, style: Style) -> str | None:
    """The key of a receipt text id under a style; None when the id cannot be written so (a hex
    letter under a decimal receipt base)."""
    value = text_id.strip()
    if not _HEX.fullmatch(value):
        return value.lower()  # opaque: only ever compared as written
    submit, receipt = style
    if receipt == 10 and not value.isdigit():
        return None
    if submit == receipt or 0 in style:
        return message_key(value)
    if submit == 16:  # decimal in the receipt for a hex id
        return format(int(value), "x")
    return str(int(value, 16))  # hex in the receipt for a decimal id


def describe(style: Style) -> str:
    """The style in words, for the log."""
    names = {10: "decimal", 16: "hex"}
    if style == AS_WRITTEN:
        return "ids written alike in submit_sm_resp and receipt texts"
    if style[0] == style[1]:
        return f"{names[style[0]]} ids in submit_sm_resp and receipt texts"
    return f"{names[style[0]]} ids in submit_sm_resp, {names[style[1]]} in receipt texts"


class IdStyle:
    """What is known of a gateway's id style (see the module docstring). Not thread-safe; one per
    adapter, used from its event loop."""

    def __init__(self, submit_base: int | None = None, receipt_base: int | None = None) -> None:
        if 0 in (submit_base, receipt_base):
            self.possible: frozenset[Style] = frozenset({AS_WRITTEN})
        else:
            self.possible = frozenset(
                s for s in STYLES if submit_base in (None, s[0]) and receipt_base in (None, s[1])
            )
        # Whether every text id has one key: the styles left all read ids alike.
        self.settled = _settled(self.possible)
        self.configured = self.settled
        # Per side (submit, receipt): whether that base is known to be hex (nothing to learn).
        self._hex_known = _hex_known(self.possible)
        self._evidence: frozenset[Style] | None = None  # styles every receipt so far allowed
        self.evidence = 0  # receipts behind `_evidence`
        self.contradictions = 0  # times the evidence disagreed with itself and started over

    @property
    def learned(self) -> Style | None:
        """The style once settled (configured, ruled by the facts, or learned): AS_WRITTEN where
        the styles left read ids alike but their bases are not known."""
        if len(self.possible) == 1:
            return next(iter(self.possible))
        return AS_WRITTEN if self.settled else None

    def key(self, text_id: str) -> str | None:
        """The receipt text id's key once the style is settled, else None. An id the style
        cannot have written (a hex letter where the receipt base is decimal) is taken as
        written, as Kannel takes a non-decimal id for hex."""
        if not self.settled:
            return None
        for style in self.possible:
            key = key_in_style(text_id, style)
            if key is not None:
                return key
        return message_key(text_id)

    def candidates(self, text_id: str) -> dict[str, frozenset[Style]]:
        """The keys the text id can have under the styles still possible, each with the styles
        that give it."""
        keys: dict[str, set[Style]] = {}
        for style in self.possible:
            key = key_in_style(text_id, style)
            if key is not None:
                keys.setdefault(key, set()).add(style)
        return {key: frozenset(styles) for key, styles in keys.items()}

    def saw_submit_id(self, raw: str) -> bool:
        """Learn from a submit_sm_resp id; True if that settled the style."""
        return self._rule(raw, 0)

    def saw_receipt_id(self, raw: str) -> bool:
        """Learn from a receipt text id; True if that settled the style."""
        return self._rule(raw, 1)

    def _rule(self, raw: str, side: int) -> bool:
        if self.settled or self._hex_known[side]:
            return False
        value = raw.strip()
        if not _HEX.fullmatch(value) or not _LETTER.search(value):
            return False  # digits only fit any base; opaque ids are compared as written anyway
        keep = frozenset(s for s in self.possible if s[side] == 16)
        return self._narrow(keep or self.possible)  # a configured base stays what it is

    def confirm(self, styles: Iterable[Style]) -> bool:
        """A receipt whose id named a message we sent only under these styles; True if the
        evidence now settles the style. Evidence that contradicts earlier evidence (a receipt
        of a message not ours whose other reading names one of ours) starts it over."""
        if self.settled:
            return False
        allowed = frozenset(styles) & self.possible
        agreed = allowed if self._evidence is None else self._evidence & allowed
        if not agreed:
            self.contradictions += self._evidence is not None
            self._evidence, self.evidence = (allowed or None), int(bool(allowed))
            return False
        self._evidence, self.evidence = agreed, self.evidence + 1
        if self.evidence >= EVIDENCE_NEEDED and _settled(agreed):
            return self._narrow(agreed)
        return False

    def observe(self, text_id: str, key: str) -> bool:
        """A receipt that named its message both ways (receipted_message_id, whose key is `key`,
        and a text id): evidence for the styles under which the text id gives that key."""
        if self.settled or not text_id.strip():
            return False
        styles = [s for s, k in self._keys(text_id) if k == key]
        return bool(styles) and self.confirm(styles)

    def _keys(self, text_id: str) -> Iterable[tuple[Style, str | None]]:
        return ((s, key_in_style(text_id, s)) for s in self.possible)

    def _narrow(self, keep: frozenset[Style]) -> bool:
        if keep == self.possible:
            return False
        self.possible = keep
        self.settled = _settled(keep)
        self._hex_known = _hex_known(keep)
        if self._evidence is not None:
            self._evidence = self._evidence & keep or None
        return self.settled


def _hex_known(styles: frozenset[Style]) -> tuple[bool, bool]:
    return (all(s[0] == 16 for s in styles), all(s[1] == 16 for s in styles))


def _settled(styles: frozenset[Style]) -> bool:
    return len({_reading(s) for s in styles}) == 1


def _reading(style: Style) -> str:
    """Styles that read every id alike: both bases the same (or opaque) read ids as written."""
    submit, receipt = style
    return "as written" if submit == receipt or 0 in style else f"{submit}<-{receipt}"


def resolve(
    candidates: Mapping[str, frozenset[Style]], known: Iterable[str]
) -> tuple[str, frozenset[Style]] | None:
    """The one candidate key that names a message we know of, with its styles; None when none
    or several do."""
    hits = [key for key in known if key in candidates]
    if len(set(hits)) != 1:
        return None
    return hits[0], candidates[hits[0]]
