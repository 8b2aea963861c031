"""Reading PDUs off a stream: the one I/O of the SMPP wire format (`smpp_codec` decodes what
these read). Both ways find a PDU's end from its command_length and refuse a length no PDU has,
as the stream cannot be resynchronised after one.
"""

from __future__ import annotations

import asyncio
import struct

from gateway_adapters.smpp_numbers import HEADER_SIZE, MAX_PDU_SIZE, PduError

_LENGTH = struct.Struct(">I")  # command_length alone


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The bytes of the next PDU on the stream; `asyncio.IncompleteReadError` at EOF.

    A `PduError` here means the stream cannot be resynchronised: close the connection.
    """
    head = await reader.readexactly(HEADER_SIZE)
    length = struct.unpack_from(">I", head)[0]
    if not HEADER_SIZE <= length <= MAX_PDU_SIZE:
        raise PduError(f"command_length {length} out of range")
    return head + await reader.readexactly(length - HEADER_SIZE)


class FrameReader:
    """Whole PDUs from a stream, as many as have arrived: one read and one call per burst
    rather than two reads per PDU (`read_frame`), for the receipt path's tens of thousands a
    second. The same errors as `read_frame`: `asyncio.IncompleteReadError` at EOF, `PduError`
    for a length that cannot be (the stream cannot be resynchronised: close it)."""

    def __init__(self, reader: asyncio.StreamReader, chunk: int = 256 * 1024) -> None:
        self.reader = reader
        self.chunk = chunk
        self._rest = b""  # the start of a PDU whose other octets have not arrived yet

    async def frames(self) -> list[bytes]:
        """The next PDUs (at least one), header included, in arrival order."""
        unpack = _LENGTH.unpack_from
        while True:
            data = self._rest
            frames: list[bytes] = []
            start, size = 0, len(data)
            while size - start >= HEADER_SIZE:
                (length,) = unpack(data, start)
                if not HEADER_SIZE <= length <= MAX_PDU_SIZE:
                    raise PduError(f"command_length {length} out of range")
                if size - start < length:
                    break
                frames.append(data[start : start + length])
                start += length
            self._rest = data[start:] if start else data
            if frames:
                return frames
            more = await self.reader.read(self.chunk)
            if not more:
                raise asyncio.IncompleteReadError(self._rest, None)
            self._rest += more
