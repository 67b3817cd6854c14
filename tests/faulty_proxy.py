"""A reverse proxy on 127.0.0.1 in front of the local S3 server that fails a chosen share of requests.

Each client connection carries one request (the proxy asks both sides to close after it), so every request
is decided alone: passed on, answered 503 SlowDown as S3 does when throttling, answered 403 AccessDenied
(to play a bucket whose policy refuses an action), dropped with a TCP reset before it reaches the server, or
held back until the test opens its gate (a write that a slow or retrying store delivers late).
"""

import random
import socket
import socketserver
import struct
import threading
from collections import Counter

SLOW_DOWN = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
             b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>")
ACCESS_DENIED = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
                 b"<Message>Access Denied</Message><RequestId>proxy</RequestId></Error>")


class Gate:
    """Holds back the next request that matches until ``open``; ``reached`` is set once one is waiting."""

    def __init__(self, method: str, part: str) -> None:
        self.method, self.part = method, part
        self.reached = threading.Event()
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()


class FaultyProxy:
    """``error_rate`` of requests get 503 SlowDown, ``reset_rate`` a connection reset; ``deny`` holds
    (method, query-substring) pairs answered 403, e.g. ("PUT", "") for every write; ``deny_once`` holds such
    pairs whose next matching request alone is refused (a policy that is still propagating)."""

    def __init__(self, upstream: str, error_rate: float = 0.0, reset_rate: float = 0.0, seed: int = 0) -> None:
        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.error_rate = error_rate
        self.reset_rate = reset_rate
        self.deny: set[tuple[str, str]] = set()
        self.deny_once: list[tuple[str, str]] = []
        self.gates: list[Gate] = []
        self.counts: Counter = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.allow_reuse_address = True
        self._server.server_bind()
        self._server.server_activate()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.upstream_url = upstream
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def hold(self, method: str, part: str) -> Gate:
        """Hold back the next ``method`` request whose target contains ``part``."""
        gate = Gate(method, part)
        with self._lock:
            self.gates.append(gate)
        return gate

    def _gate(self, method: str, target: str) -> Gate | None:
        with self._lock:
            for gate in self.gates:
                if gate.method == method and gate.part in target:
                    self.gates.remove(gate)
                    return gate
        return None

    def _decide(self, method: str, target: str) -> str:
        with self._lock:
            once = next(((m, part) for m, part in self.deny_once if method == m and part in target), None)
            if once:
                self.deny_once.remove(once)
            if once or any(method == m and part in target for m, part in self.deny):
                choice = "denied"
            else:
                draw = self._rng.random()
                choice = ("slowdown" if draw < self.error_rate else
                          "reset" if draw < self.error_rate + self.reset_rate else "passed")
            self.counts[choice] += 1
            return choice

    def _handle(self, client: socket.socket) -> None:
        head = _read_head(client)
        if not head:
            return
        method, target = head.split(b" ", 2)[:2]
        gate = self._gate(method.decode(), target.decode())
        if gate:
            gate.reached.set()
            gate._open.wait(60)
        choice = self._decide(method.decode(), target.decode())
        if choice == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        elif choice in ("slowdown", "denied"):
            _drain_body(client, head)  # unread bytes would turn the close into a reset
            status, body = (b"503 Slow Down", SLOW_DOWN) if choice == "slowdown" else (b"403 Forbidden", ACCESS_DENIED)
            body = b"" if method == b"HEAD" else body
            client.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            client.close()
        else:
            self._forward(client, head)

    def _forward(self, client: socket.socket, head: bytes) -> None:
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(_closing(head))
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()  # the request body
            response = _read_head(upstream)
            while response.startswith(b"HTTP/1.1 1"):  # interim 100 Continue heads pass as they are
                interim, rest = response.split(b"\r\n\r\n", 1)
                client.sendall(interim + b"\r\n\r\n")
                response = rest if b"\r\n\r\n" in rest else rest + _read_head(upstream)
            if response:  # the final head gets Connection: close
                client.sendall(_closing(response))
                _pump(upstream, client)
        client.close()


def _read_head(sock: socket.socket) -> bytes:
    """Bytes up to and including the blank line that ends an HTTP head; may hold the start of a body."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return b""
        if not chunk:
            return b""
        data += chunk
    return data


def _drain_body(client: socket.socket, head: bytes) -> None:
    end = head.index(b"\r\n\r\n") + 4
    lines = head[:end].lower().split(b"\r\n")
    if any(line.startswith(b"expect:") for line in lines):
        return  # the client waits for our answer before sending a body
    length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), 0)
    remaining = length - (len(head) - end)
    while remaining > 0:
        chunk = client.recv(min(remaining, 65536))
        if not chunk:
            return
        remaining -= len(chunk)


def _closing(head: bytes) -> bytes:
    """The head with ``Connection: close``, so each connection carries exactly one request."""
    end = head.index(b"\r\n\r\n")
    lines = [line for line in head[:end].split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join(lines + [b"Connection: close"]) + head[end:]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
