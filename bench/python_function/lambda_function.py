"""The Python counterpart of the registrar for the cold start benchmark.

It does what a typical Python Lambda for this job does with a RUNNING event: boto3 clients made
at import time, then DescribeTasks to read the task's address and RegisterTargets for one
target group. It does less than the registrar (no second DescribeTasks after registering, one
target group, no mapping), so the comparison favours Python.

Settings: TARGET_GROUP_ARN and CONTAINER_PORT. The runtime is awslambdaric, the runtime
interface client of AWS's Python base images: `python -m awslambdaric lambda_function.handler`.
"""

import os

import boto3

ecs = boto3.client("ecs")
elbv2 = boto3.client("elbv2")
TARGET_GROUP_ARN = os.environ["TARGET_GROUP_ARN"]
CONTAINER_PORT = int(os.environ["CONTAINER_PORT"])


def private_address(task: dict) -> str | None:
    """Return the private IPv4 address of the task's network interface, if it has one."""
    for attachment in task.get("attachments", []):
        for pair in attachment.get("details", []):
            if pair.get("name") == "privateIPv4Address":
                return pair.get("value")
    return None


def handler(event, context):
    detail = event.get("detail") or {}
    if event.get("detail-type") != "ECS Task State Change":
        return {"outcome": "ignored"}
    if detail.get("lastStatus") != "RUNNING" or detail.get("desiredStatus") != "RUNNING":
        return {"outcome": "ignored"}

    described = ecs.describe_tasks(cluster=detail["clusterArn"], tasks=[detail["taskArn"]])
    tasks = described["tasks"]
    if not tasks or tasks[0]["lastStatus"] != "RUNNING":
        return {"outcome": "skipped"}
    address = private_address(tasks[0])
    if address is None:
        raise ValueError(f"task {detail['taskArn']} has no private IPv4 address")

    elbv2.register_targets(
        TargetGroupArn=TARGET_GROUP_ARN, Targets=[{"Id": address, "Port": CONTAINER_PORT}]
    )
    return {"outcome": "registered", "target": f"{address}:{CONTAINER_PORT}"}
