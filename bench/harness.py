"""Pieces the benchmark driver puts together: the emulator, a fake Lambda Runtime API, a
counting proxy in front of the emulator, and a runner that measures one cold process.

Everything listens on 127.0.0.1 and every AWS client here has the emulator's endpoint and dummy
credentials. The emulator is the project's own launcher (tools/moto_launcher.py), so it behaves
as it does in the tests: tasks stay RUNNING and ListTasks returns pages of 100.
"""

import copy
import http.client
import json
import os
import signal
import statistics
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:registrar"
RUNTIME_PREFIX = "/2018-06-01/runtime/invocation/"


class Emulator:
    """moto started through tools/moto_launcher.py with the project's venv; stops on `stop`."""

    def __init__(self, log_path: Path) -> None:
        python = ROOT / ".venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"{python} is missing: run `make venv` first")
        self._log = open(log_path, "wb")
        self._process = subprocess.Popen(
            [str(python), str(ROOT / "tools" / "moto_launcher.py")],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        line = self._process.stdout.readline()
        if not line:
            self.stop()
            raise SystemExit(f"the emulator did not start; see {log_path}")
        ready = json.loads(line)
        self.endpoint: str = ready["endpoint"]
        self.port: int = ready["port"]
        self.vpc_id: str = ready["vpcId"]
        self.subnet_ids: list[str] = ready["subnetIds"]
        self.security_group_id: str = ready["securityGroupId"]

    def client(self, service: str):
        """Return a boto3 client for `service` on the emulator."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self) -> None:
        """Close the launcher's stdin, which stops it, and kill it by pid if it lingers."""
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


class Resources:
    """Creates clusters, task definitions, tasks and ip target groups in the emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.ecs = emulator.client("ecs")
        self.elb = emulator.client("elbv2")

    def cluster(self, name: str) -> str:
        return self.ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]

    def task_definition(self, family: str, container: str = "app", port: int = 8080) -> str:
        # moto's RunTask returns HTTP 500 unless each container sets its own memory.
        definition = self.ecs.register_task_definition(
            family=family,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": container,
                    "image": "public.ecr.aws/nginx/nginx:latest",
                    "memory": 512,
                    "essential": True,
                    "portMappings": [{"containerPort": port}],
                }
            ],
        )
        return definition["taskDefinition"]["taskDefinitionArn"]

    def run_tasks(self, cluster: str, task_definition: str, count: int) -> list[dict]:
        """Run `count` Fargate tasks, 10 per RunTask call (the API's maximum)."""
        tasks = []
        while len(tasks) < count:
            batch = min(10, count - len(tasks))
            output = self.ecs.run_task(
                cluster=cluster,
                taskDefinition=task_definition,
                launchType="FARGATE",
                count=batch,
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": self.emulator.subnet_ids,
                        "securityGroups": [self.emulator.security_group_id],
                        "assignPublicIp": "DISABLED",
                    }
                },
            )
            tasks.extend(output["tasks"])
        return tasks

    def target_group(self, name: str, port: int = 8080) -> str:
        output = self.elb.create_target_group(
            Name=name,
            Protocol="HTTP",
            Port=port,
            VpcId=self.emulator.vpc_id,
            TargetType="ip",
        )
        return output["TargetGroups"][0]["TargetGroupArn"]

    def targets(self, target_group_arn: str) -> list[tuple[str, int]]:
        output = self.elb.describe_target_health(TargetGroupArn=target_group_arn)
        return [
            (d["Target"]["Id"], d["Target"]["Port"]) for d in output["TargetHealthDescriptions"]
        ]


def task_address(task: dict) -> str:
    """Return the private IPv4 address of a task's ENI, as moto's RunTask reports it."""
    for attachment in task.get("attachments", []):
        for pair in attachment.get("details", []):
            if pair.get("name") == "privateIPv4Address":
                return pair["value"]
    raise ValueError(f"task {task.get('taskArn')} has no privateIPv4Address")


def fixture(name: str) -> dict:
    return json.loads((ROOT / "events" / name).read_text())


def rewrite_event(event: dict, task: dict, cluster_arn: str) -> dict:
    """Point a recorded ECS Task State Change event at a task in the emulator.

    Sets region, account, task, cluster and task definition ARNs, the group, the containers'
    names and every copy of the private IPv4 address, as tests/support/mod.rs does.
    """
    event = copy.deepcopy(event)
    event["region"] = REGION
    event["account"] = ACCOUNT
    event["resources"] = [task["taskArn"]]
    detail = event["detail"]
    detail["taskArn"] = task["taskArn"]
    detail["clusterArn"] = cluster_arn
    detail["taskDefinitionArn"] = task["taskDefinitionArn"]
    family = task["taskDefinitionArn"].rsplit("/", 1)[1].split(":")[0]
    detail["group"] = f"family:{family}"
    address = task_address(task)
    for attachment in detail.get("attachments", []):
        for pair in attachment.get("details", []):
            if pair.get("name") == "privateIPv4Address":
                pair["value"] = address
    names = [container["name"] for container in task.get("containers", [])]
    for index, container in enumerate(detail.get("containers", [])):
        container["taskArn"] = task["taskArn"]
        if index < len(names):
            container["name"] = names[index]
        for interface in container.get("networkInterfaces", []):
            interface["privateIpv4Address"] = address
    return event


class QuietServer(ThreadingHTTPServer):
    """A threaded HTTP server that ignores connections its peer dropped: the benchmark kills
    functions while a request for the next event is still held."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


class RuntimeApi:
    """A Lambda Runtime API on 127.0.0.1 that hands out queued events and times the process.

    It records when the function first requests an event (the end of its init phase) and when
    each response or error arrives. A request for an event after the queue is empty is held
    until `reset`, as Lambda holds a function between invocations.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0
        self._handed = 0
        self._allowed = 0
        self._events: list[tuple[str, bytes]] = []
        self.first_next_at: float | None = None
        self.posted: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.endswith("/next"):
                    self._reply(404, b"{}")
                    return
                event = api._take_event()
                if event is None:
                    self._reply(410, b'{"message": "no more events"}')
                    return
                request_id, body = event
                self._reply(
                    200,
                    body,
                    {
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 900_000),
                        "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                        "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = self.path[len(RUNTIME_PREFIX) :].split("/")
                kind = parts[1] if len(parts) > 1 else self.path
                api._record(parts[0], kind, body)
                self._reply(202, b"{}")

            def _reply(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def reset(self, events: list[tuple[str, dict]], stepwise: bool = False) -> None:
        """Queue new events, clear the records and let a held request end.

        With `stepwise`, each event after the first waits for `allow_next`, so that the caller
        can read counters between two events without a race with the next one.
        """
        with self._changed:
            self._generation += 1
            self._events = [(request_id, json.dumps(e).encode()) for request_id, e in events]
            self._handed = 0
            self._allowed = 1 if stepwise else len(events)
            self.first_next_at = None
            self.posted = []
            self._changed.notify_all()

    def allow_next(self) -> None:
        """Let the function take one more event in stepwise mode."""
        with self._changed:
            self._allowed += 1
            self._changed.notify_all()

    def _take_event(self) -> tuple[str, bytes] | None:
        with self._changed:
            if self.first_next_at is None:
                self.first_next_at = time.perf_counter()
            generation = self._generation
            deadline = time.monotonic() + 900
            while generation == self._generation and time.monotonic() < deadline:
                if self._events and self._handed < self._allowed:
                    self._handed += 1
                    return self._events.pop(0)
                self._changed.wait(1)
            return None

    def _record(self, request_id: str, kind: str, body: bytes) -> None:
        try:
            parsed = json.loads(body or b"null")
        except json.JSONDecodeError:
            parsed = body.decode(errors="replace")
        with self._changed:
            self.posted.append(
                {"at": time.perf_counter(), "requestId": request_id, "kind": kind, "body": parsed}
            )
            self._changed.notify_all()

    def wait_posted(self, count: int, timeout: float) -> bool:
        """Wait until `count` responses or errors have arrived; False on time-out."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.posted) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def close(self) -> None:
        self.reset([])
        self._server.shutdown()
        self._server.server_close()


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards to the emulator and records each AWS operation.

    The operation comes from `X-Amz-Target` (ECS and Step Functions, JSON protocols) or from
    the `Action` form field (ELBv2, query protocol).
    """

    SERVICES = {"AmazonEC2ContainerServiceV20141113": "ECS", "AWSStepFunctions": "SFN"}

    def __init__(self, upstream_port: int) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy._count(self.headers.get("X-Amz-Target"), body)
                status, headers, reply = proxy._forward(
                    self.command, self.path, dict(self.headers), body, upstream_port
                )
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _count(self, target: str | None, body: bytes) -> None:
        if target:
            prefix, _, operation = target.partition(".")
            call = (self.SERVICES.get(prefix, prefix), operation)
        else:
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            call = ("ELBv2", form.get("Action", ["?"])[0])
        with self._lock:
            self.calls.append(call)

    def _forward(self, method, path, headers, body, port):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            self._local.connection = connection
        headers = {k: v for k, v in headers.items() if k.lower() != "connection"}
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
        except (http.client.HTTPException, OSError):
            connection.close()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
        return response.status, response.getheaders(), response.read()

    def take(self) -> list[tuple[str, str]]:
        """Return the calls recorded since the last `take`, and forget them."""
        with self._lock:
            calls, self.calls = self.calls, []
        return calls

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def function_environment(endpoint: str, extra: dict) -> dict:
    """Return the environment both functions get: what Lambda sets, the emulator's endpoint,
    dummy credentials, no profile files, and the function's own settings in `extra`.

    `run_process` adds AWS_LAMBDA_RUNTIME_API.
    """
    missing = str(ROOT / "target" / "bench" / "no-such-aws-file")
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "AWS_LAMBDA_FUNCTION_NAME": "registrar",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": missing,
        "AWS_SHARED_CREDENTIALS_FILE": missing,
    }
    env.update(extra)
    return env


def run_process(
    command: list[str],
    env: dict,
    events: list[tuple[str, dict]],
    cwd: Path = ROOT,
    log_path: Path | None = None,
    timeout: float = 120,
    on_posted=None,
) -> dict:
    """Start one process against a new Runtime API, hand it `events`, then kill it by pid once
    the last response arrived.

    Each process gets a Runtime API of its own, so a request for the next event that a killed
    process sent just before it died cannot take the next process's event or its start time.

    Returns the responses and these measures: `initMs`, from the start of the process to its
    first request for an event; `doneMs`, from the start to each response; `maxRssKiB`, the
    peak resident set size (VmHWM, read just before the kill); `cpuMs`, wait4's user and system
    time.
    `on_posted(index)` runs after each response, before the process may take the next event.
    """
    api = RuntimeApi()
    api.reset(events, stepwise=on_posted is not None)
    env = dict(env, AWS_LAMBDA_RUNTIME_API=api.address)
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=log)
    completed = True
    for index in range(len(events)):
        if not api.wait_posted(index + 1, timeout):
            completed = False
            break
        if on_posted:
            on_posted(index)
            api.allow_next()
    peak_kib = peak_resident_kib(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = -signal.SIGKILL
    init, posted = api.first_next_at, list(api.posted)
    api.close()
    if log_path:
        log.close()
    if not completed:
        raise RuntimeError(
            f"{command[0]} posted {len(posted)} of {len(events)} responses within "
            f"{timeout} s; see {log_path}"
        )
    return {
        "initMs": (init - started) * 1000 if init else None,
        "doneMs": [(response["at"] - started) * 1000 for response in posted],
        "posted": posted,
        "maxRssKiB": peak_kib,
        "cpuMs": (usage.ru_utime + usage.ru_stime) * 1000,
    }


def peak_resident_kib(pid: int) -> int | None:
    """Return a live process's peak resident set size in KiB (VmHWM in /proc/PID/status), or
    None when the process has exited.

    wait4's ru_maxrss is no use here: the child of a vfork, as subprocess makes it, keeps the
    parent's high-water mark across exec, so every function would count the driver's memory.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def percentile(values: list[float], share: float) -> float:
    """The value at `share` (0 to 1) of the sorted values, interpolated linearly."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def describe(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "p10": percentile(values, 0.1),
        "p90": percentile(values, 0.9),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }
