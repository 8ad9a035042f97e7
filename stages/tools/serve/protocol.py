"""uvicorn's h11 protocol with the guards the ASGI app cannot see.

- A malformed request (``Content-Length: abc`` or ``-1``, a garbage request line, headers too
  large) is answered with the JSON error shape, naming the problem, not uvicorn's plain text.
- Request headers must arrive within ``read_timeout`` (a client dripping a header a byte at a
  time is answered 408 and dropped; uvicorn alone waits forever).
- After an early answer (413: body too large) the rest of the body is read and discarded for at
  most ``linger`` seconds, so the client can read the answer, then the connection is closed.
"""
from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from stages.tools.serve.limits import error_body

STATUS_LINES = {400: b"400 Bad Request", 408: b"408 Request Timeout",
                413: b"413 Content Too Large", 431: b"431 Request Header Fields Too Large"}


def bad_request_message(err: h11.RemoteProtocolError) -> str:
    """h11's terse reason as a sentence; never a repr of the offending bytes."""
    reason = str(err).split(":")[0].strip()
    if "Content-Length" in reason:
        return f"{reason} header: it must be one whole, non-negative number of bytes"
    if err.error_status_hint == 431:
        return "request headers too large"
    return f"malformed HTTP request ({reason})"


def guarded_protocol(read_timeout: float, linger: float = 2.0) -> type[H11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with these timeouts."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.protocol_error: h11.RemoteProtocolError | None = None
            self._arm_head_timer()
            next_event = self.conn.next_event

            def remember_error():     # uvicorn drops the exception; keep it for the message
                try:
                    return next_event()
                except h11.RemoteProtocolError as err:
                    self.protocol_error = err
                    raise
            self.conn.next_event = remember_error

        def _arm_head_timer(self) -> None:
            self.loop.call_later(read_timeout, self._head_deadline, id(self.cycle))

        def _head_deadline(self, cycle_id: int) -> None:
            """No complete request headers since the timer was armed: answer 408 or drop an idle one."""
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE or id(self.cycle) != cycle_id:
                return
            if self.conn.trailing_data[0]:   # part of a request arrived, then nothing
                self._write_raw(408, "request headers not received in time (client stalled over "
                                     f"{read_timeout:g} s); connection closed")
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY:
                self.loop.call_later(linger, self._end_linger, id(self.cycle))
            else:
                self._arm_head_timer()

        def _end_linger(self, cycle_id: int) -> None:
            if id(self.cycle) == cycle_id and self.conn.their_state is h11.SEND_BODY:
                self.transport.close()     # the client is still sending a body we refused

        def send_400_response(self, msg: str) -> None:
            err = self.protocol_error
            status = err.error_status_hint if err is not None and err.error_status_hint in STATUS_LINES else 400
            self._write_raw(status, bad_request_message(err) if err is not None else msg)
            self.transport.close()

        def _write_raw(self, status: int, message: str) -> None:
            """The error written straight to the socket: h11 may not allow a response in this state."""
            body = error_body(message)
            self.transport.write(b"HTTP/1.1 " + STATUS_LINES[status] + b"\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: " + str(len(body)).encode()
                                 + b"\r\n\r\n" + body)

    return GuardedH11Protocol
