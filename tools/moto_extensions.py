"""Changes to moto 5.2.5, made before its server starts, for the health-wait state machine.

moto's Step Functions interpreter can run the state machine in `statemachine/`, but three
things stand in the way, and `install` fixes them in this process:

- moto reports every registered target `healthy` at once. `POST /registrar-test/target-health`
  scripts what DescribeTargetHealth returns for one target instead (see `TargetHealthRoute`).
- moto resolves `aws-sdk:SERVICE:action` with boto3's service names, so the Step Functions name
  `elasticloadbalancingv2` is mapped to boto3's `elbv2`. Errors are then named
  `ElasticLoadBalancingV2.<Code>Exception`, as on AWS, not `elasticloadbalancingv2.<...>`.
- moto's SDK integrations call `http://localhost:MOTO_PORT`. They are sent to 127.0.0.1, the
  only address the server listens on.

After `install`, the launcher posts EXECUTE_STATE_MACHINES to `/moto-api/config`, because
moto only records executions by default.
"""

import json
import threading

# Body for moto's `/moto-api/config` that makes Step Functions run executions.
EXECUTE_STATE_MACHINES = {"stepfunctions": {"execute_state_machine": True}}

# The control route for scripted target health, served beside moto's own routes.
TARGET_HEALTH_PATH = "/registrar-test/target-health"
TARGET_HEALTH_STATES = ("initial", "healthy", "unhealthy", "unused", "draining", "unavailable")
# Errors a script entry can raise instead of a health result, with the message of each.
SCRIPTED_ERRORS = {"Throttling": "Rate exceeded"}


class TargetHealthScripts:
    """Scripted DescribeTargetHealth results, per (target group ARN, target id, port).

    Each call that names a scripted target takes the next entry of its sequence, and the last
    entry repeats. Unscripted targets keep moto's own result.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sequences: dict[tuple[str, str, str], list[dict]] = {}

    def set(self, target_group_arn: str, target_id: str, port: int, sequence: list[dict]) -> None:
        """Replace the target's sequence. An empty sequence removes the script."""
        key = (target_group_arn, target_id, str(port))
        with self._lock:
            if sequence:
                self._sequences[key] = list(sequence)
            else:
                self._sequences.pop(key, None)

    def next_entry(self, target_group_arn: str, target_id: str, port: object) -> dict | None:
        """Return this call's entry and advance the sequence, or None for an unscripted target."""
        key = (target_group_arn, target_id, str(port))
        with self._lock:
            sequence = self._sequences.get(key)
            if not sequence:
                return None
            if len(sequence) > 1:
                return sequence.pop(0)
            return sequence[0]


def parse_health_script(body: bytes) -> tuple[str, str, int, list[dict]]:
    """Parse and check a request body for TARGET_HEALTH_PATH.

    Raises ValueError, naming the invalid field, when the body does not have the form
    {"targetGroupArn", "targetId", "port", "sequence": [{"state", "reason"?, "description"?}
    or {"error": "Throttling"}, ...]}.
    """
    try:
        request = json.loads(body or b"null")
    except json.JSONDecodeError as err:
        raise ValueError(f"the body is not valid JSON: {err}") from err
    if not isinstance(request, dict):
        raise ValueError("the body must be a JSON object")

    target_group_arn = request.get("targetGroupArn")
    target_id = request.get("targetId")
    port = request.get("port")
    sequence = request.get("sequence")
    if not isinstance(target_group_arn, str) or not target_group_arn:
        raise ValueError("targetGroupArn must be a non-empty string")
    if not isinstance(target_id, str) or not target_id:
        raise ValueError("targetId must be a non-empty string")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, not {port!r}")
    if not isinstance(sequence, list):
        raise ValueError("sequence must be a list of entries")

    for index, entry in enumerate(sequence):
        if not isinstance(entry, dict):
            raise ValueError(f"sequence[{index}] must be an object")
        if "error" in entry:
            if entry["error"] not in SCRIPTED_ERRORS:
                raise ValueError(
                    f"sequence[{index}].error {entry['error']!r} is not one of "
                    f"{sorted(SCRIPTED_ERRORS)}"
                )
            continue
        if entry.get("state") not in TARGET_HEALTH_STATES:
            raise ValueError(
                f"sequence[{index}].state {entry.get('state')!r} is not one of "
                f"{list(TARGET_HEALTH_STATES)}"
            )
        for field in ("reason", "description"):
            if field in entry and not isinstance(entry[field], str):
                raise ValueError(f"sequence[{index}].{field} must be a string")
    return target_group_arn, target_id, port, sequence


class TargetHealthRoute:
    """WSGI wrapper that serves TARGET_HEALTH_PATH and passes every other request to moto.

    `POST` with a JSON body as `parse_health_script` describes replaces the script of one
    target and returns {"entries": N}. An invalid body gets status 400 and {"message": ...}.
    """

    def __init__(self, app, scripts: TargetHealthScripts) -> None:
        self._app = app
        self._scripts = scripts

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != TARGET_HEALTH_PATH:
            return self._app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            return self._reply(start_response, "405 Method Not Allowed", {"message": "use POST"})

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            target_group_arn, target_id, port, sequence = parse_health_script(body)
        except ValueError as err:
            return self._reply(start_response, "400 Bad Request", {"message": str(err)})
        self._scripts.set(target_group_arn, target_id, port, sequence)
        return self._reply(start_response, "200 OK", {"entries": len(sequence)})

    @staticmethod
    def _reply(start_response, status: str, body: dict):
        data = json.dumps(body).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(status, headers)
        return [data]


def script_target_health(scripts: TargetHealthScripts) -> None:
    """Make moto's DescribeTargetHealth follow the scripts for the targets a call names.

    A call without Targets (the whole group) keeps moto's result, so listing a group's targets
    does not use up a script's entries.
    """
    from moto.elbv2.exceptions import ELBClientError
    from moto.elbv2.models import ELBv2Backend

    unscripted = ELBv2Backend.describe_target_health

    def describe_target_health(self, target_group_arn, targets):
        statuses = unscripted(self, target_group_arn, targets)
        if not targets:
            return statuses
        for status in statuses:
            entry = scripts.next_entry(target_group_arn, status.instance_id, status.port)
            if entry is None:
                continue
            if "error" in entry:
                raise ELBClientError(entry["error"], SCRIPTED_ERRORS[entry["error"]])
            # moto builds a new FakeHealthStatus for every call, so changing it is safe.
            status.status = entry["state"]
            status.reason = entry.get("reason")
            status.description = entry.get("description")
        return statuses

    ELBv2Backend.describe_target_health = describe_target_health


def serve_target_health_route(scripts: TargetHealthScripts) -> None:
    """Wrap the WSGI application that ThreadedMotoServer builds with TargetHealthRoute."""
    from moto.moto_server import threaded_moto_server

    dispatcher = threaded_moto_server.DomainDispatcherApplication

    def application(create_app):
        return TargetHealthRoute(dispatcher(create_app), scripts)

    threaded_moto_server.DomainDispatcherApplication = application


def route_sdk_integrations() -> None:
    """Let moto's Step Functions call ELBv2 through the AWS SDK integration, on 127.0.0.1."""
    import sys

    import boto3
    from botocore.config import Config
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service,
        state_task_service_aws_sdk,
    )
    from moto.stepfunctions.parser.asl.utils import boto_client

    overrides = state_task_service.StateTaskService._SERVICE_NAME_SFN_TO_BOTO_OVERRIDES
    overrides["elasticloadbalancingv2"] = "elbv2"
    error_prefixes = state_task_service_aws_sdk._SERVICE_ERROR_NAMES
    error_prefixes["elasticloadbalancingv2"] = "ElasticLoadBalancingV2"

    original = boto_client.boto_client_for

    def client_on_loopback(region: str, service: str, state_credentials=None):
        # Like moto's own client for SDK integrations, this one makes no SDK retries, because
        # the state machine's Retry decides, and skips parameter validation. MOTO_PORT is read
        # per call because the launcher sets it after the server has bound its port.
        return boto3.client(
            service_name=service,
            region_name=region,
            endpoint_url=f"http://127.0.0.1:{moto_server_port()}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(
                parameter_validation=False,
                retries={"total_max_attempts": 1},
                connect_timeout=60,
                read_timeout=60,
            ),
        )

    # Modules import the function by name, so it is replaced in those loaded already, and in
    # its own module for those imported later.
    boto_client.boto_client_for = client_on_loopback
    for module in list(sys.modules.values()):
        if getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = client_on_loopback


def paginate_list_tasks() -> None:
    """Make ListTasks return pages of at most maxResults ARNs (default 100) with a nextToken.

    Real ECS pages ListTasks at 100 ARNs; moto 5.2.5 returns every ARN at once and ignores
    maxResults and nextToken, so the registrar's paging could not be tested against it.
    """
    from moto.core.responses import ActionResult
    from moto.ecs.responses import EC2ContainerServiceResponse

    original = EC2ContainerServiceResponse.list_tasks

    def list_tasks(self):
        arns = original(self).result["taskArns"]
        size = int(self._get_param("maxResults") or 100)
        start = int(self._get_param("nextToken") or 0)
        page = {"taskArns": arns[start : start + size]}
        if start + size < len(arns):
            page["nextToken"] = str(start + size)
        return ActionResult(page)

    EC2ContainerServiceResponse.list_tasks = list_tasks


def install() -> TargetHealthScripts:
    """Apply every change above. Call it before ThreadedMotoServer.start()."""
    paginate_list_tasks()
    scripts = TargetHealthScripts()
    script_target_health(scripts)
    serve_target_health_route(scripts)
    route_sdk_integrations()
    return scripts

