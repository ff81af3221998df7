"""uvicorn's HTTP protocol with a deadline for the request head.

uvicorn closes a keep-alive connection that stays idle after a response, but
not one that sends a request head slowly: a few hundred connections each
trickling a header line every few seconds (slowloris) are held open for ever,
until the process runs out of file descriptors. Here a request head must be
complete within HEAD_TIMEOUT_S of the connection opening, or of the first byte
of the next request on it; otherwise the connection is closed. Bodies and
responses are not timed (an upload or an SSE stream may take long).
"""

from __future__ import annotations

import asyncio
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT_S: Final = 10.0


class HeadDeadlineProtocol(HttpToolsProtocol):
    head_timeout_s: float = HEAD_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
