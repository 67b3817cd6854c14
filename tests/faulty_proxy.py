"""A reverse proxy on 127.0.0.1 in front of the local S3 server that fails a chosen share of requests.

Each client connection carries one request (the proxy asks both sides to close after it), so every request
is decided alone: passed on, answered 503 SlowDown as S3 does when throttling, answered 403 AccessDenied
(to play a bucket whose policy refuses an action), dropped with a TCP reset before it reaches the server, or
held back until the test opens its gate (a write that a slow or retrying store delivers late). ``quirks`` make it
behave as S3 look-alikes do where they differ from AWS (``QUIRKS``).
"""

import random
import socket
import socketserver
import struct
import threading
from collections import Counter

SLOW_DOWN = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
             b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>")
PRECONDITION_FAILED = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PreconditionFailed</Code>"
                       b"<Message>At least one of the pre-conditions you specified did not hold</Message>"
                       b"<RequestId>proxy</RequestId></Error>")
QUIRKS = {
    "unquoted-if-match": "If-Match is compared with the ETag without its quotes: a quoted, current ETag gets 412",
    "412-for-missing": "If-Match on a missing key gets 412 instead of 404",
    "delete-ignores-if-match": "DeleteObject ignores If-Match: the object is deleted whatever its ETag",
    "no-conditional-writes": "PutObject ignores If-None-Match and If-Match: every write overwrites",
}
ACCESS_DENIED = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
                 b"<Message>Access Denied</Message><RequestId>proxy</RequestId></Error>")


class Gate:
    """Holds back the next request that matches until ``open``; ``reached`` is set once one is waiting."""

    def __init__(self, method: str, part: str, header: bytes | None = None) -> None:
        self.method, self.part, self.header = method, part, header
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
        self.quirks: set[str] = set()  # names from QUIRKS
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

    def hold(self, method: str, part: str, header: bytes | None = None) -> Gate:
        """Hold back the next ``method`` request whose target contains ``part`` (and that carries ``header``)."""
        gate = Gate(method, part, header)
        with self._lock:
            self.gates.append(gate)
        return gate

    def _gate(self, method: str, target: str, head: bytes) -> Gate | None:
        with self._lock:
            for gate in self.gates:
                if gate.method == method and gate.part in target and (
                        gate.header is None or _header(head, gate.header) is not None):
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
        gate = self._gate(method.decode(), target.decode(), head)
        if gate:
            gate.reached.set()
            gate._open.wait(60)
        choice = self._decide(method.decode(), target.decode())
        quirky = self._quirky(method, head)
        if quirky is None:  # answered by a quirk
            choice = "precondition"
        else:
            head = quirky
        if choice == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        elif choice in ("slowdown", "denied", "precondition"):
            _drain_body(client, head)  # unread bytes would turn the close into a reset
            status, body = {"slowdown": (b"503 Slow Down", SLOW_DOWN), "denied": (b"403 Forbidden", ACCESS_DENIED),
                            "precondition": (b"412 Precondition Failed", PRECONDITION_FAILED)}[choice]
            _answer(client, status, b"" if method == b"HEAD" else body)
        else:
            missing_is_412 = "412-for-missing" in self.quirks and _header(head, b"if-match") is not None
            self._forward(client, head, missing_is_412)

    def _quirky(self, method: bytes, head: bytes) -> bytes | None:
        """The request as a look-alike store would take it, or None where the quirk answers it with a 412."""
        if_match = _header(head, b"if-match")
        if "unquoted-if-match" in self.quirks and if_match is not None and if_match.startswith(b'"'):
            return None
        if "delete-ignores-if-match" in self.quirks and method == b"DELETE":
            head = _without(head, b"if-match")
        if "no-conditional-writes" in self.quirks and method == b"PUT":
            head = _without(_without(head, b"if-match"), b"if-none-match")
        return head

    def _forward(self, client: socket.socket, head: bytes, missing_is_412: bool = False) -> None:
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(_closing(head))
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()  # the request body
            response = _read_head(upstream)
            while response.startswith(b"HTTP/1.1 1"):  # interim 100 Continue heads pass as they are
                interim, rest = response.split(b"\r\n\r\n", 1)
                client.sendall(interim + b"\r\n\r\n")
                response = rest if b"\r\n\r\n" in rest else rest + _read_head(upstream)
            if missing_is_412 and response.startswith(b"HTTP/1.1 404"):
                _answer(client, b"412 Precondition Failed", PRECONDITION_FAILED)
                return
            if response:  # the final head gets Connection: close
                client.sendall(_closing(response))
                _pump(upstream, client)
        client.close()


def _answer(client: socket.socket, status: bytes, body: bytes) -> None:
    client.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    client.close()


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case) in an HTTP head, or None."""
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _without(head: bytes, name: bytes) -> bytes:
    """The head without header ``name`` (lower case)."""
    end = head.index(b"\r\n\r\n")
    lines = [line for line in head[:end].split(b"\r\n") if line.partition(b":")[0].strip().lower() != name]
    return b"\r\n".join(lines) + head[end:]


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
