"""A small HTTP proxy before the test S3 server: a request log, injected latency, a bandwidth cap.

:class:`S3Proxy` listens on 127.0.0.1 (a thread per client connection) and forwards every request
to one upstream server with ``http.client``: method, path, query and every end-to-end header
(``Host``, ``Range`` and the signature included) unchanged, bodies streamed both ways in pieces.
Each request is logged as a :class:`LoggedRequest`. ``latency`` (seconds, added before each
request is forwarded) and ``bandwidth`` (bytes per second over all connections together, request
and response bodies alike) can be changed at any time; :meth:`S3Proxy.reset` restores the defaults.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Bytes forwarded per read and write: a smooth cap (0.7 ms at 400 MB/s) at little CPU per byte.
PIECE = 256 * 1024
#: Headers that belong to one connection, not to the request (RFC 9110, section 7.6.1).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    # answered by this proxy's own server (100 Continue) before the body is read
    "expect",
}


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the proxy saw it."""

    method: str
    #: as the client sent it (percent-encoded), without the query
    path: str
    query: str
    #: the Range header, if any
    range: str | None
    status: int
    #: body bytes sent back to the client
    bytes: int
    #: body bytes the client sent
    bytes_in: int
    #: ``time.monotonic()`` when the request arrived (before the injected latency) and when
    #: its response was about to end
    started: float = 0.0
    finished: float = 0.0


class TokenBucket:
    """An aggregate rate limit shared by every thread: ``take(n)`` sleeps until ``n`` bytes fit.

    The bucket may go into debt: a thread takes its bytes at once and sleeps off the debt, so
    threads are served in the order they ask and the total rate holds however many there are.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rate: float | None = None
        self._tokens = 0.0
        self._stamp = time.monotonic()

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"bandwidth must be positive bytes/s or None, got {rate!r}")
        with self._lock:
            self._rate = None if rate is None else float(rate)
            self._tokens = min(PIECE, self._rate) if self._rate else 0.0
            self._stamp = time.monotonic()

    def take(self, n: int) -> None:
        with self._lock:
            rate = self._rate
            if rate is None:
                return
            now = time.monotonic()
            # a burst of at most one piece: the cap holds over any interval longer than that
            self._tokens = min(PIECE, self._tokens + (now - self._stamp) * rate) - n
            self._stamp = now
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class S3Proxy:
    """Forward everything to ``upstream`` (``http://host:port``); see the module docstring.

    Parameters
    ----------
    upstream : str
        The server every request goes to.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.latency = 0.0
        self.bucket = TokenBucket()
        self._log: list[LoggedRequest] = []
        self._log_lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="s3-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def bandwidth(self) -> float | None:
        return self.bucket.rate

    @bandwidth.setter
    def bandwidth(self, rate: float | None) -> None:
        self.bucket.set_rate(rate)

    def start(self) -> S3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ the log
    @property
    def log(self) -> list[LoggedRequest]:
        """A copy of the requests answered so far, in the order they finished."""
        with self._log_lock:
            return list(self._log)

    def clear(self) -> None:
        with self._log_lock:
            self._log.clear()

    def reset(self) -> None:
        """No latency, no bandwidth cap, an empty log."""
        self.latency = 0.0
        self.bandwidth = None
        self.clear()

    def requests(self, method: str | None = None, contains: str = "") -> list[LoggedRequest]:
        """The logged requests with this method (any if None) whose path contains ``contains``."""
        return [
            r for r in self.log if (method is None or r.method == method) and contains in r.path
        ]

    def _record(self, entry: LoggedRequest) -> None:
        with self._log_lock:
            self._log.append(entry)


def _handler_for(proxy: S3Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ForwardingHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _ForwardingHandler(BaseHTTPRequestHandler):
    proxy: S3Proxy
    protocol_version = "HTTP/1.1"  # keep-alive, as clients of S3 expect
    timeout = 120  # an idle client connection's thread ends after this

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # the proxy keeps its own log

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _forward(self):
        proxy = self.proxy
        started = time.monotonic()
        if proxy.latency > 0:
            time.sleep(proxy.latency)
        path, _, query = self.path.partition("?")

        def record(status, sent, bytes_in):
            # called before the client can see the end of the response: a client that has its
            # answer finds its request in the log
            proxy._record(
                LoggedRequest(
                    method=self.command,
                    path=path,
                    query=query,
                    range=self.headers.get("Range"),
                    status=status,
                    bytes=sent,
                    bytes_in=bytes_in,
                    started=started,
                    finished=time.monotonic(),
                )
            )

        # A fresh upstream connection per request: on 127.0.0.1 it costs little, and a request
        # is never sent on a connection the server has closed meanwhile.
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            try:
                response, bytes_in = self._send_upstream(upstream)
            except OSError as err:
                record(502, 0, 0)
                self.send_error(502, f"upstream: {err}")
                self.close_connection = True
            else:
                self._send_back(response, lambda sent: record(response.status, sent, bytes_in))
        finally:
            upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _forward

    def _send_upstream(self, conn):
        """Stream the request to the server; its response and the body bytes forwarded."""
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():
            if key.lower() not in HOP_BY_HOP:
                conn.putheader(key, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        bytes_in = 0
        length = int(self.headers.get("Content-Length") or 0)
        for piece in self._request_pieces(chunked, length):
            self.proxy.bucket.take(len(piece))
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            bytes_in += len(piece)
        if chunked:
            conn.send(b"0\r\n\r\n")
        return conn.getresponse(), bytes_in

    def _request_pieces(self, chunked, length):
        if not chunked:
            while length > 0:
                piece = self.rfile.read(min(PIECE, length))
                if not piece:
                    raise ConnectionError("client closed the connection mid-body")
                length -= len(piece)
                yield piece
            return
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers: dropped with the chunked framing they belong to
                return
            yield self.rfile.read(size)
            self.rfile.readline()

    def _send_back(self, response, record) -> None:
        """Stream the server's response to the client; ``record(body bytes)`` before its end."""
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        has_body = self.command != "HEAD" and response.status not in (204, 304) and length != "0"
        # a body the server delimited by closing its connection goes on in chunks
        chunked = has_body and length is None
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if not has_body:
            record(0)
        self.end_headers()
        sent, piece = 0, response.read(PIECE) if has_body else b""
        while piece:
            following = response.read(PIECE)
            self.proxy.bucket.take(len(piece))
            sent += len(piece)
            if not following and not chunked:
                record(sent)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            piece = following
        if chunked:
            record(sent)
            self.wfile.write(b"0\r\n\r\n")
        elif has_body and sent == 0:
            record(0)  # a Content-Length the server did not honour
        self.wfile.flush()
