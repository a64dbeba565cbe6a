"""gunicorn worker classes with a deadline on a request's headers, for the app servers'
own ports: a client that connects and sends nothing, or sends part of its headers and
stalls (slowloris), is closed ``header_timeout`` seconds after the connection opened
(or after its last response, on a kept-alive connection), and never holds a thread.

Stock gunicorn 27 has no such deadline: a gthread worker hands each new connection to a
thread, which blocks reading partial headers forever (four stalled clients take a
four-thread web worker down), and uvicorn keeps a connection that never sends a request
open forever. Nginx has its own timeouts; these cover the loopback ports behind it.
"""

from __future__ import annotations

import selectors
import time
from collections import deque
from functools import partial

from gunicorn.workers import gthread
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn_worker import UvicornWorker

# Headers end at the first empty line (gunicorn accepts CRLF only, but a bare LF
# still ends the head it will then refuse with a 400).
HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
RECV_BYTES = 8192


class HeaderDeadlineThreadWorker(gthread.ThreadWorker):
    """gthread, but the main loop collects each request's headers (non-blocking, with a
    deadline) before a thread is given the connection."""

    header_timeout = 10.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.heading_conns: deque = deque()
        # Request-line and header-field limits bound what one head may hold.
        self.max_head_bytes = (self.cfg.limit_request_line + 4
                               + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2) + 2)

    def accept(self, listener):
        try:
            client, addr = listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        self.nr_conns += 1
        self._await_head(gthread.TConn(self.cfg, client, addr, listener.getsockname()))

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection's next request: its head has the same deadline."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn)

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        while self.heading_conns and self.heading_conns[0].timeout <= now:
            self._drop(self.heading_conns[0])

    def _await_head(self, conn):
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.header_timeout
        conn.head = bytearray()
        self.heading_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_head, conn))

    def _read_head(self, conn, client):
        try:
            data = client.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.head += data
        if len(conn.head) <= self.max_head_bytes and not any(end in conn.head for end in HEAD_ENDS):
            return
        # A whole head (or more than a head may hold: gunicorn's parser answers 4xx).
        self.poller.unregister(client)
        self.heading_conns.remove(conn)
        conn.init()
        conn.parser.unreader.unread(bytes(conn.head))
        del conn.head
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, conn):
        self.heading_conns.remove(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        conn.close()


class HeaderDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, but a connection whose next request's headers are not in
    after ``header_timeout`` seconds is closed (stock: a new connection that sends
    nothing stays open for ever)."""

    header_timeout = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._header_timer = None
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._disarm_once_a_request_started()

    def on_response_complete(self) -> None:
        self._arm_header_deadline()
        super().on_response_complete()
        self._disarm_once_a_request_started()

    def connection_lost(self, exc):
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_deadline(self):
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        # uvicorn starts a new RequestResponseCycle when a request's headers are complete.
        self._header_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm_once_a_request_started(self):
        if self._header_timer is not None and self.cycle is not self._header_cycle:
            self._cancel_header_timer()

    def _cancel_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self):
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def thread_worker(header_timeout: float) -> type:
    """The web app's worker class (gunicorn_conf ``worker_class``) with this deadline."""
    return type("GourmetgramThreadWorker", (HeaderDeadlineThreadWorker,),
                {"header_timeout": header_timeout})


def uvicorn_worker(header_timeout: float) -> type:
    """The API's worker class: uvicorn on the h11 protocol above, with this deadline."""
    protocol = type("GourmetgramH11Protocol", (HeaderDeadlineH11Protocol,),
                    {"header_timeout": header_timeout})
    return type("GourmetgramUvicornWorker", (UvicornWorker,),
                {"CONFIG_KWARGS": {**UvicornWorker.CONFIG_KWARGS, "http": protocol}})
