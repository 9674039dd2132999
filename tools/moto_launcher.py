"""Start moto in server mode on 127.0.0.1 for the registrar's tests and demo.

The launcher binds a free loopback port, keeps ECS tasks RUNNING (moto otherwise advances a
task one lifecycle step per DescribeTasks call), creates a VPC with two subnets and a security
group for tasks and load balancers, prints one JSON line describing all of that, and then runs
until its standard input closes. The parent process holds that pipe open, so the emulator ends
when the parent ends, even if the parent is killed.
"""

import json
import os
import signal
import socket
import sys
import urllib.request

REGION = "us-east-1"


def free_port() -> int:
    """Return a port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(endpoint: str, path: str, body: dict) -> None:
    """Send a JSON body to one of moto's control endpoints."""
    request = urllib.request.Request(
        endpoint + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
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
    # moto's RunTask answers HTTP 500 in a VPC without DNS hostnames.
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnet_ids = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for cidr, zone in (("10.0.1.0/24", "us-east-1a"), ("10.0.2.0/24", "us-east-1b"))
    ]
    group_id = ec2.create_security_group(
        GroupName="registrar-tests", Description="registrar tests", VpcId=vpc_id
    )["GroupId"]
    return {"vpcId": vpc_id, "subnetIds": subnet_ids, "securityGroupId": group_id}


def main() -> int:
    port = free_port()
    # Step Functions' SDK integrations call back into the server at this port.
    os.environ["MOTO_PORT"] = str(port)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        os.environ[name] = value

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"

    def stop(*_):
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    try:
        post(
            endpoint,
            "/moto-api/state-manager/set-transition",
            {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000000}},
        )
        network = create_network(endpoint)
    except Exception as err:  # noqa: BLE001 - any set-up failure ends the launcher
        print(f"moto launcher: set-up on {endpoint} failed: {err}", file=sys.stderr)
        server.stop()
        return 1

    print(json.dumps({"port": port, "endpoint": endpoint, **network}), flush=True)

    # Block until the parent closes our standard input (or dies).
    while sys.stdin.buffer.read(4096):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
