"""Start moto in server mode on 127.0.0.1 for the registrar's tests and `make demo`.

The launcher:

1. starts moto's ThreadedMotoServer on a free port of 127.0.0.1 and sets MOTO_PORT to it, so
   that Step Functions' AWS SDK integrations call back into this server;
2. keeps ECS tasks RUNNING, because moto otherwise moves a task one lifecycle step further on
   every DescribeTasks call until it is STOPPED;
3. runs Step Functions executions, lets their AWS SDK integrations reach ELBv2, and serves
   POST /registrar-test/target-health for scripted target health (tools/moto_extensions.py);
4. creates a VPC (10.0.0.0/16, DNS hostnames on, which moto's RunTask requires), two /24 subnets
   in us-east-1a and us-east-1b, a /19 subnet for tests with many tasks, and a security group;
5. prints one JSON line to stdout:
   {"port", "endpoint", "vpcId", "subnetIds", "wideSubnetId", "securityGroupId"};
6. serves until stdin reaches end of file, SIGTERM or SIGINT, then stops the server.

The parent process keeps stdin open, so the server also stops when the parent dies. Errors go
to stderr and end the launcher with exit status 1. Every client here uses the server's
loopback endpoint and dummy credentials. AWS and proxy settings from the caller's
environment are removed first, so no client here falls back to AWS, a proxy or a metadata
address.

Usage: .venv/bin/python tools/moto_launcher.py
"""

import json
import os
import signal
import sys
import urllib.request

REGION = "us-east-1"
KEEP_TASKS_RUNNING = {
    "model_name": "ecs::task",
    "transition": {"progression": "manual", "times": 1_000_000_000},
}


def isolate_environment() -> None:
    """Drop AWS and proxy settings inherited from the caller and set dummy credentials."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith("AWS_") or upper.endswith("_PROXY"):
            del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
    )


def post_json(endpoint: str, path: str, body: dict) -> None:
    """POST a JSON body to one of moto's control endpoints."""
    request = urllib.request.Request(
        endpoint + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # An empty ProxyHandler keeps urllib from routing loopback requests through a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        response.read()


def create_network(endpoint: str) -> dict:
    """Create the VPC, subnets and security group that tasks and load balancers use."""
    import boto3

    ec2 = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnet_ids = []
    for cidr, zone in (("10.0.1.0/24", "us-east-1a"), ("10.0.2.0/24", "us-east-1b")):
        subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)
        subnet_ids.append(subnet["Subnet"]["SubnetId"])
    # A wide subnet for tests that run hundreds of tasks at once; each /24 above holds 251.
    wide_subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.32.0/19", AvailabilityZone="us-east-1a")
    group_id = ec2.create_security_group(
        GroupName="registrar-tests", Description="ECS tasks and load balancers", VpcId=vpc_id
    )["GroupId"]
    return {
        "vpcId": vpc_id,
        "subnetIds": subnet_ids,
        "wideSubnetId": wide_subnet["Subnet"]["SubnetId"],
        "securityGroupId": group_id,
    }


class StopRequested(Exception):
    """Raised in the main thread on SIGTERM or SIGINT, so that `main` stops the server."""


def request_exit(_signal_number: int, _frame) -> None:
    """Raise StopRequested; installed as the handler of SIGTERM and SIGINT."""
    raise StopRequested


def main() -> int:
    isolate_environment()
    signal.signal(signal.SIGTERM, request_exit)
    signal.signal(signal.SIGINT, request_exit)

    try:
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        print(
            f"moto launcher: cannot import moto ({err}); run `make venv` to install it",
            file=sys.stderr,
        )
        return 1

    # Health scripting and Step Functions' ELBv2 integration; they must precede start().
    import moto_extensions

    moto_extensions.install()

    # Port 0 lets the kernel choose a free port when the server binds, so no other process can
    # take it between choosing and binding. ThreadedMotoServer.start() would wait forever if
    # its bind failed. moto 5.2.5 reads MOTO_PORT on each use (moto.settings.moto_server_port),
    # so setting it after the bind and before the first request is enough.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        port = server.get_host_and_port()[1]
        os.environ["MOTO_PORT"] = str(port)
        endpoint = f"http://127.0.0.1:{port}"
        try:
            post_json(endpoint, "/moto-api/state-manager/set-transition", KEEP_TASKS_RUNNING)
            post_json(endpoint, "/moto-api/config", moto_extensions.EXECUTE_STATE_MACHINES)
            network = create_network(endpoint)
        except Exception as err:  # noqa: BLE001 - report any set-up failure, then exit
            print(f"moto launcher: set-up on {endpoint} failed: {err!r}", file=sys.stderr)
            return 1

        print(json.dumps({"port": port, "endpoint": endpoint, **network}), flush=True)
        # The parent reads only that line. Later prints from moto go to stderr, the log.
        sys.stdout = sys.stderr

        # Serve until the parent closes stdin or dies. Input is read and ignored.
        while sys.stdin.buffer.read1(4096):
            pass
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    try:
        status = main()
    except StopRequested:
        status = 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown, which takes about 1 s with moto 5.2.5 loaded (measured on a
    # 2-core machine). Nothing is left to clean up once the server has stopped.
    os._exit(status)
