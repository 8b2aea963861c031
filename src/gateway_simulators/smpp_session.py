"""One client connection to the SMSC simulator: its bind, sequence numbers, answers collected
while a read is handled, and the deliver_sm awaiting their answer."""

from __future__ import annotations

import asyncio

from gateway_adapters.smpp_codec import MAX_SEQUENCE, Pdu, encode
from gateway_simulators.smpp_receipts import Receipt


class Session:
    """One client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.bound = False
        self.role = ""  # once bound: transceiver, transmitter or receiver
        self.closed = False
        self.in_flight = 0
        # While a read's PDUs are handled, answers collect here and go out in one write.
        self.out: list[bytes] | None = None
        self.answered = 0  # submit_sm answered into `out`, in flight until it is written
        self.pending: dict[int, asyncio.Future[Pdu]] = {}
        # deliver_sm awaiting their answer: sequence number -> (receipt, loop time it expires),
        # in the order they were sent.
        self.receipts_out: dict[int, tuple[Receipt, float]] = {}
        self._sequence = 0

    def send(self, pdu: Pdu) -> None:
        if self.closed:
            raise ConnectionResetError("session closed")
        if self.out is not None:
            self.out.append(encode(pdu))
        else:
            self.writer.write(encode(pdu))

    def flush(self) -> None:
        """Write the answers collected while a read was handled."""
        out, self.out = self.out, None
        self.in_flight -= self.answered
        self.answered = 0
        if out and not self.closed:
            self.writer.write(b"".join(out))

    def next_sequence(self) -> int:
        self._sequence = self._sequence % MAX_SEQUENCE + 1
        return self._sequence

    async def request(self, pdu: Pdu, seconds: float) -> Pdu:
        pdu.sequence_number = self.next_sequence()
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self.pending[pdu.sequence_number] = future
        try:
            self.send(pdu)
            async with asyncio.timeout(seconds):
                return await future
        finally:
            self.pending.pop(pdu.sequence_number, None)

    def resolve(self, pdu: Pdu) -> None:
        future = self.pending.pop(pdu.sequence_number, None)
        if future is not None and not future.done():
            future.set_result(pdu)

    def lose(self) -> list[Receipt]:
        """Close the connection; the receipts it left unanswered (to send again)."""
        if self.closed:
            return []
        self.closed = True
        self.bound = False
        self.writer.close()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionResetError("session closed"))
        self.pending.clear()
        unanswered = [receipt for receipt, _ in self.receipts_out.values()]
        self.receipts_out.clear()
        return unanswered
