"""A fault-injecting HTTP proxy on 127.0.0.1, in front of the local AWS emulator.

The registrar's tests point their SDK clients at this proxy instead of moto. Each request is
forwarded to the emulator unchanged, unless a fault rule matches it. A rule replaces the response
to a share of the ECS or ELBv2 calls it matches with one of these faults:

- ``throttle``: HTTP 400 with the service's throttling error, in its own protocol: ECS speaks
  awsJson1_1 (``{"__type": "ThrottlingException", "message": "Rate exceeded"}``) and ELBv2
  speaks awsQuery (an ``ErrorResponse`` XML document with code ``Throttling``).
- ``unavailable``: HTTP 503 with ``ServiceUnavailable``, in the same two shapes.
- ``error``: HTTP 400 with the rule's ``code`` and ``message``, for permanent errors such as
  ``AccessDenied`` or ``TooManyTargets``.
- ``delay``: waits ``delaySeconds`` before forwarding, so that a client with a shorter
  attempt timeout gives up on the attempt and retries.

When the emulator cannot be reached (it was stopped), the proxy closes the client's connection
without a response, as a dead server would.

Control requests go to the proxy itself, under ``/fault-proxy/``:

- ``POST /fault-proxy/rules`` with ``{"seed": 1, "rules": [RULE, ...]}`` replaces the rules
  and zeroes the counters. A rule is ``{"service": "ecs" | "elbv2" | "any", "action": NAME or
  null, "contains": TEXT or null, "fault": ..., "rate": 0.0-1.0, "times": N or null,
  "code", "message", "delaySeconds"}``. ``contains`` must occur in the URL-decoded request
  body (a target group ARN, for example), and ``times`` caps how many faults the rule injects.
- ``GET /fault-proxy/stats`` returns ``{"requests": {"ecs:DescribeTasks": N, ...}, "faults":
  {"elbv2:RegisterTargets:throttle": N, ...}}``.

The proxy prints one JSON line, ``{"port", "endpoint"}``, and serves until stdin reaches end of
file. It listens on 127.0.0.1 only and forwards to the ``--upstream`` URL only, which must be
a loopback address.

Usage: .venv/bin/python tools/fault_proxy.py --upstream http://127.0.0.1:PORT
"""

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
ELBV2_NAMESPACE = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
CONTROL_PREFIX = "/fault-proxy/"
# Headers that belong to one hop and are not forwarded.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}
# Time allowed for the emulator to respond to one forwarded request.
UPSTREAM_TIMEOUT_SECONDS = 60


class FaultState:
    """The fault rules, the random source and the counters, shared by all request threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[dict] = []
        self.injected: list[int] = []
        self.random = random.Random(0)
        self.requests: dict[str, int] = {}
        self.faults: dict[str, int] = {}

    def replace(self, document: dict) -> None:
        rules = document.get("rules", [])
        for rule in rules:
            if rule.get("fault") not in ("throttle", "unavailable", "error", "delay"):
                raise ValueError(f"unknown fault {rule.get('fault')!r} in rule {rule}")
            if rule.get("service", "any") not in ("ecs", "elbv2", "any"):
                raise ValueError(f"unknown service {rule.get('service')!r} in rule {rule}")
        with self.lock:
            self.rules = rules
            self.injected = [0] * len(rules)
            self.random = random.Random(document.get("seed", 0))
            self.requests = {}
            self.faults = {}

    def choose(self, service: str, action: str, text: str) -> dict | None:
        """Count the request and return the fault rule that fires for it, if any.

        `text` is the request body, URL-decoded, which a rule's `contains` must occur in.
        """
        key = f"{service}:{action}"
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            for index, rule in enumerate(self.rules):
                if rule.get("service", "any") not in ("any", service):
                    continue
                if rule.get("action") not in (None, action):
                    continue
                if rule.get("contains") is not None and rule["contains"] not in text:
                    continue
                times = rule.get("times")
                if times is not None and self.injected[index] >= times:
                    continue
                if self.random.random() >= rule.get("rate", 1.0):
                    continue
                self.injected[index] += 1
                fault_key = f"{key}:{rule['fault']}"
                self.faults[fault_key] = self.faults.get(fault_key, 0) + 1
                return rule
        return None

    def stats(self) -> dict:
        with self.lock:
            return {"requests": dict(self.requests), "faults": dict(self.faults)}


def identify(headers, body: bytes) -> tuple[str, str]:
    """Return (service, action) of an AWS request: ("ecs", X), ("elbv2", X) or ("other", "")."""
    target = headers.get("X-Amz-Target", "")
    if target.startswith(ECS_TARGET_PREFIX):
        return "ecs", target[len(ECS_TARGET_PREFIX) :]
    authorization = headers.get("Authorization", "")
    if "/elasticloadbalancing/" in authorization:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        return "elbv2", form.get("Action", [""])[0]
    return "other", ""


def error_response(service: str, status: int, code: str, message: str) -> tuple[int, dict, bytes]:
    """Build an error response in the service's own protocol."""
    request_id = f"fault-{random.getrandbits(64):016x}"
    if service == "ecs":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id}
        return status, headers, body
    error_type = "Receiver" if status >= 500 else "Sender"
    body = (
        f'<ErrorResponse xmlns="{ELBV2_NAMESPACE}"><Error><Type>{error_type}</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
    return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body


def fault_response(service: str, rule: dict) -> tuple[int, dict, bytes] | None:
    """Return the response a fault rule sends instead of the emulator's, or None to forward."""
    fault = rule["fault"]
    if fault == "throttle":
        code = "ThrottlingException" if service == "ecs" else "Throttling"
        return error_response(service, 400, rule.get("code", code), "Rate exceeded")
    if fault == "unavailable":
        return error_response(service, 503, "ServiceUnavailable", "Service Unavailable")
    if fault == "error":
        return error_response(
            service, 400, rule.get("code", "ValidationError"), rule.get("message", "injected")
        )
    time.sleep(float(rule.get("delaySeconds", 1.0)))
    return None


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault-proxy"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        """Keep the request log off stderr: a burst would fill the test output."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, headers: dict, body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def control(self, body: bytes) -> None:
        state: FaultState = self.server.state
        if self.command == "GET" and self.path == CONTROL_PREFIX + "stats":
            payload = json.dumps(state.stats()).encode()
            self.answer(200, {"Content-Type": "application/json"}, payload)
            return
        if self.command == "POST" and self.path == CONTROL_PREFIX + "rules":
            try:
                state.replace(json.loads(body or b"{}"))
            except (ValueError, TypeError, KeyError) as err:
                self.answer(400, {"Content-Type": "text/plain"}, str(err).encode())
                return
            self.answer(200, {"Content-Type": "application/json"}, b"{}")
            return
        self.answer(404, {"Content-Type": "text/plain"}, b"unknown fault-proxy request")

    def forward(self, body: bytes) -> None:
        upstream: urllib.parse.SplitResult = self.server.upstream
        connection = http.client.HTTPConnection(
            upstream.hostname, upstream.port, timeout=UPSTREAM_TIMEOUT_SECONDS
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError:
            # The emulator is gone: behave like a dead server and drop the connection.
            self.close_connection = True
            return
        finally:
            connection.close()
        relayed = {
            name: value
            for name, value in response.getheaders()
            if name.lower() not in HOP_HEADERS and name.lower() != "content-length"
        }
        self.answer(response.status, relayed, payload)

    def handle_any(self) -> None:
        body = self.read_body()
        if self.path.startswith(CONTROL_PREFIX):
            self.control(body)
            return
        service, action = identify(self.headers, body)
        if service != "other":
            text = urllib.parse.unquote_plus(body.decode("utf-8", "replace"))
            rule = self.server.state.choose(service, action, text)
            if rule is not None:
                answer = fault_response(service, rule)
                if answer is not None:
                    self.answer(*answer)
                    return
        try:
            self.forward(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up on the attempt (its time-out), which is what a delay is for.
            self.close_connection = True

    do_GET = handle_any
    do_POST = handle_any
    do_PUT = handle_any
    do_DELETE = handle_any


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True
    # Room for a burst of concurrent connections from one test.
    request_queue_size = 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the emulator's http://127.0.0.1:PORT")
    args = parser.parse_args()
    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme != "http" or upstream.hostname not in ("127.0.0.1", "localhost"):
        print(f"fault proxy: --upstream must be http on 127.0.0.1, got {args.upstream}", file=sys.stderr)
        return 1

    server = FaultProxy(("127.0.0.1", 0), ProxyHandler)
    server.state = FaultState()
    server.upstream = upstream
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    print(json.dumps({"port": port, "endpoint": f"http://127.0.0.1:{port}"}), flush=True)
    sys.stdout = sys.stderr
    while sys.stdin.buffer.read1(4096):
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
