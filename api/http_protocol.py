"""uvicorn's HTTP protocol with a deadline and a size limit for the request head.

uvicorn closes a keep-alive connection that stays idle after a response, but
not one that sends a request head slowly: a few hundred connections each
trickling a header line every few seconds (slowloris) are held open for ever,
until the process runs out of file descriptors. Here a request head must be
complete within HEAD_TIMEOUT_S of the connection opening, or of the first byte
of the next request on it; otherwise the connection is closed. Bodies and
responses are not timed (an upload or an SSE stream may take long).

Nor does uvicorn (with httptools) limit the head's size: one header line of
48 MB was read in 9 s, and 48 such connections took the API to 1.1 GB and its
answers to seconds (an outside check). A head larger than HEAD_MAX_BYTES is
answered 431 and the connection closed, as nginx and Node.js do at 8-16 KiB.
"""

from __future__ import annotations

import asyncio
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT_S: Final = 10.0
HEAD_MAX_BYTES: Final = 64 * 1024


class HeadDeadlineProtocol(HttpToolsProtocol):
    head_timeout_s: float = HEAD_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes: int = 0
    _head_tail: bytes = b""  # the last bytes counted, for an end split across reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()

    def data_received(self, data: bytes) -> None:
        # While a head is under way (its deadline armed), its bytes are counted,
        # before the parser sees them: a head that ends in this read must end
        # within the limit (checked after the parse, a head of up to twice the
        # limit completed in one read passed: a recheck).
        if self._head_timer is not None:
            room = HEAD_MAX_BYTES - self._head_bytes
            if len(data) > room:
                seen = self._head_tail + data
                end = seen.find(b"\r\n\r\n")
                if end < 0 or end + 4 - len(self._head_tail) > room:
                    self._disarm()
                    self._head_too_large()
                    return
            self._head_bytes += len(data)
            self._head_tail = data[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        self._head_bytes, self._head_tail = 0, b""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_large(self) -> None:
        if self.transport.is_closing():
            return
        msg = f"request head larger than {HEAD_MAX_BYTES} bytes"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            + f"content-length: {len(msg)}\r\n".encode("ascii")
            + b"connection: close\r\n\r\n"
            + msg.encode("ascii")
        )
        self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
