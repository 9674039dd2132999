"""Benchmarks of the Lambda binary against a local moto: cold start, peak memory, API calls per
event, sweep scale and artifact size. Prints Markdown tables and writes target/bench/results.json.

Usage (normally through `make bench`, which builds the binary first):

    python bench/driver.py --binary PATH [--quick] [--sections cold,calls,sweep,size]

Every process and server here is on 127.0.0.1: the emulator comes from tools/moto_launcher.py,
the Runtime API and the counting proxy from bench/harness.py.
"""

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import boto3
import harness
from harness import ROOT, CountingProxy, Emulator, Resources

OUT = ROOT / "target" / "bench"
PYTHON_FUNCTION = Path(__file__).resolve().parent / "python_function"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the Lambda binary (bootstrap) to run")
    parser.add_argument(
        "--zip",
        action="append",
        default=[],
        metavar="ARCH=PATH",
        help="a Lambda zip artifact and its architecture, for the size table; repeatable",
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller sweeps")
    parser.add_argument("--sections", default="machine,size,cpu,cold,calls,sweep")
    parser.add_argument("--runs", type=int, help="cold start runs per function")
    parser.add_argument("--sizes", help="sweep sizes, comma-separated (default 100,1000,3000)")
    parser.add_argument(
        "--rust-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the Rust function's cold starts; repeatable",
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    runs = args.runs or (10 if args.quick else 30)
    default_sizes = "100,1000" if args.quick else "100,1000,3000"
    sizes = [int(size) for size in (args.sizes or default_sizes).split(",")]
    binary = Path(args.binary).resolve()
    OUT.mkdir(parents=True, exist_ok=True)

    results: dict = {"command": " ".join(sys.argv), "quick": args.quick}
    if "machine" in sections:
        results["machine"] = machine()
        print_machine(results["machine"])
    if "size" in sections:
        results["size"] = artifact_size(binary, args.zip)
        print_size(results["size"])
    if "cpu" in sections:
        results["cpu"] = handler_cpu(ROOT / "target" / "criterion")
        print_cpu(results["cpu"])
    if sections & {"cold", "calls", "sweep"}:
        emulator = Emulator(OUT / "moto.log")
        try:
            if "cold" in sections:
                extra = dict(entry.partition("=")[::2] for entry in args.rust_env)
                results["cold"] = cold_start(emulator, binary, runs, extra)
                print_cold(results["cold"])
            if "calls" in sections:
                results["calls"] = calls_per_event(emulator, binary)
                print_calls(results["calls"])
            if "sweep" in sections:
                results["sweep"] = sweep_scale(emulator, binary, sizes)
                print_sweep(results["sweep"])
        finally:
            emulator.stop()
    results["loadAverageAtEnd"] = load_average()
    print(f"\nload average at the end: {' '.join(results['loadAverageAtEnd'])}")
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {OUT / 'results.json'}")
    return 0


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    moto = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-c", "import moto; print(moto.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "cores": len(
            [x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("processor")]
        ),
        "memoryGiB": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadAverage": load_average(),
        "rustc": rustc.strip(),
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "moto": moto,
    }


def load_average() -> list[str]:
    """Return the 1, 5 and 15 minute load averages: other work on the machine shifts timings."""
    return Path("/proc/loadavg").read_text().split()[:3]


def cold_start(emulator: Emulator, binary: Path, runs: int, rust_extra: dict) -> dict:
    """Start each function `runs` times, alternating, for one RUNNING event each.

    `rust_extra` adds environment variables to the Rust function's, for experiments such as
    another certificate location.
    """
    resources = Resources(emulator)
    cluster = resources.cluster("bench-cold")
    definition = resources.task_definition("bench-cold-web")
    group = resources.target_group("bench-cold-tg")
    task = resources.run_tasks(cluster, definition, 1)[0]
    event = harness.rewrite_event(harness.fixture("fargate-running.json"), task, cluster)
    mapping = {
        "services": [
            {
                "name": "web",
                "cluster": cluster,
                "family": "bench-cold-web",
                "container": "app",
                "containerPort": 8080,
                "targetGroups": [group],
            }
        ]
    }

    rust_env = harness.function_environment(
        emulator.endpoint, {"REGISTRAR_CONFIG": json.dumps(mapping), **rust_extra}
    )
    # Bytecode goes to target/bench, not into bench/python_function. It is kept from one run
    # to the next, as the compiled boto3 in a Lambda Python runtime is.
    python_env = harness.function_environment(
        emulator.endpoint,
        {
            "TARGET_GROUP_ARN": group,
            "CONTAINER_PORT": "8080",
            "PYTHONPYCACHEPREFIX": str(OUT / "pycache"),
        },
    )
    python = str(Path(sys.executable))
    functions = {
        "rust": ([str(binary)], rust_env, ROOT),
        "python": ([python, "-m", "awslambdaric", "lambda_function.handler"], python_env,
                   PYTHON_FUNCTION),
    }
    samples: dict[str, list[dict]] = {name: [] for name in functions}
    log = OUT / "cold-functions.log"
    log.write_bytes(b"")
    # One unmeasured run each, so that both start from a warm page cache.
    for command, env, cwd in functions.values():
        harness.run_process(command, env, [("warm-up", event)], cwd=cwd, log_path=log)
    for run in range(runs):
        for name, (command, env, cwd) in functions.items():
            sample = harness.run_process(
                command, env, [(f"{name}-{run}", event)], cwd=cwd, log_path=log
            )
            body = sample["posted"][0]["body"]
            if sample["posted"][0]["kind"] != "response" or body.get("outcome") != "registered":
                raise RuntimeError(f"{name} did not register the task: {sample['posted'][0]}")
            samples[name].append(sample)

    summary = {}
    for name, values in samples.items():
        summary[name] = {
            "initMs": harness.describe([s["initMs"] for s in values]),
            "eventMs": harness.describe([s["doneMs"][0] - s["initMs"] for s in values]),
            "totalMs": harness.describe([s["doneMs"][0] for s in values]),
            "maxRssMiB": harness.describe([s["maxRssKiB"] / 1024 for s in values]),
            "cpuMs": harness.describe([s["cpuMs"] for s in values]),
        }
    summary["targets"] = resources.targets(group)
    summary["emulatorCallMs"] = emulator_call_ms(resources, cluster, task, group, runs)
    return summary


def emulator_call_ms(resources: Resources, cluster: str, task: dict, group: str, runs: int):
    """Time the two calls both functions make, from a warm boto3 client in the driver.

    Each function waits at least this long per call on the emulator, whatever its language:
    the part of a cold run that the function's own code cannot shorten.
    """
    target = {"Id": harness.task_address(task), "Port": 8080}
    timings: dict[str, list[float]] = {"DescribeTasks": [], "RegisterTargets": []}
    for _ in range(runs):
        started = time.perf_counter()
        resources.ecs.describe_tasks(cluster=cluster, tasks=[task["taskArn"]])
        timings["DescribeTasks"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        resources.elb.register_targets(TargetGroupArn=group, Targets=[target])
        timings["RegisterTargets"].append((time.perf_counter() - started) * 1000)
    return {name: harness.describe(values) for name, values in timings.items()}


def calls_per_event(emulator: Emulator, binary: Path) -> dict:
    """Count the AWS calls the binary makes for each kind of event, through a counting proxy."""
    resources = Resources(emulator)
    cluster = resources.cluster("bench-calls")
    one = resources.task_definition("bench-one")
    three = resources.task_definition("bench-three")
    other = resources.task_definition("bench-unmapped")
    groups = {name: resources.target_group(f"bench-calls-{name}") for name in ("a", "b", "c", "d")}
    task_one, task_stopping = resources.run_tasks(cluster, one, 2)
    task_three = resources.run_tasks(cluster, three, 1)[0]
    task_other = resources.run_tasks(cluster, other, 1)[0]

    # The task whose stop event is counted is registered first, then stopped, as ECS would
    # have it by the time the stop event arrives.
    stop_address = harness.task_address(task_stopping)
    resources.elb.register_targets(
        TargetGroupArn=groups["a"], Targets=[{"Id": stop_address, "Port": 8080}]
    )
    resources.ecs.stop_task(cluster=cluster, task=task_stopping["taskArn"], reason="benchmark")

    def event(name: str, task: dict) -> dict:
        return harness.rewrite_event(harness.fixture(name), task, cluster)

    missing = dict(task_stopping, taskArn=task_stopping["taskArn"].rsplit("/", 1)[0] + "/" + "0" * 32)
    cases = [
        ("RUNNING, 1 target group", event("fargate-running.json", task_one)),
        ("RUNNING again (duplicate)", event("fargate-running.json", task_one)),
        ("RUNNING, 3 target groups", event("fargate-running.json", task_three)),
        ("PENDING (waits)", event("fargate-pending.json", task_one)),
        ("other detail-type (ignored)", harness.fixture("service-action.json")),
        ("task of no mapped service (ignored)", event("fargate-running.json", task_other)),
        ("STOPPED, task still described", event("fargate-stopped.json", task_stopping)),
        ("STOPPED, task unknown to ECS", event("fargate-stopped.json", missing)),
    ]

    def mapping(by_name: bool) -> dict:
        def ref(name: str) -> str:
            return f"bench-calls-{name}" if by_name else groups[name]

        return {
            "services": [
                {"name": "one", "cluster": cluster, "family": "bench-one", "container": "app",
                 "containerPort": 8080, "targetGroups": [ref("a")]},
                {"name": "three", "cluster": cluster, "family": "bench-three",
                 "container": "app", "containerPort": 8080,
                 "targetGroups": [ref("b"), ref("c"), ref("d")]},
            ]
        }

    proxy = CountingProxy(emulator.port)
    rows = []
    for by_name, selected in ((False, cases), (True, cases[2:3] * 2)):
        env = harness.function_environment(
            proxy.endpoint, {"REGISTRAR_CONFIG": json.dumps(mapping(by_name))}
        )
        per_event: list[list] = []
        proxy.take()
        sample = harness.run_process(
            [str(binary)],
            env,
            [(f"calls-{i}", e) for i, (_, e) in enumerate(selected)],
            log_path=OUT / "calls-function.log",
            on_posted=lambda _index: per_event.append(proxy.take()),
        )
        for index, ((label, _), calls) in enumerate(zip(selected, per_event)):
            body = sample["posted"][index]["body"]
            if by_name:
                label = f"{label}, groups by name, {'first' if index == 0 else 'second'} event"
            rows.append(
                {
                    "case": label,
                    "outcome": body.get("outcome") if isinstance(body, dict) else body,
                    "calls": len(calls),
                    "sequence": [f"{service}.{op}" for service, op in calls],
                }
            )
    # The proxy records a call before forwarding it, and the function posts its response only
    # after its last call returned, so every call falls before the response that follows it.
    proxy.close()
    left = (stop_address, 8080) in resources.targets(groups["a"])
    return {"cases": rows, "stoppedTaskTargetLeft": left}


def sweep_scale(emulator: Emulator, binary: Path, sizes: list[int]) -> dict:
    """Sweep N running tasks of three services over four target groups, on the binary.

    Tasks accumulate in one cluster from one size to the next. Every size gets new, empty
    target groups, so its first sweep registers every target and its second changes nothing.
    """
    resources = Resources(emulator)
    cluster = resources.cluster("bench-sweep")
    families = ["bench-sweep-a", "bench-sweep-b", "bench-sweep-c"]
    definitions = {family: resources.task_definition(family) for family in families}
    running = {family: 0 for family in families}
    proxy = CountingProxy(emulator.port)
    rows = []
    for size in sizes:
        started = time.perf_counter()
        for index, family in enumerate(families):
            expected = size // 3 + (1 if index < size % 3 else 0)
            resources.run_tasks(cluster, definitions[family], expected - running[family])
            running[family] = expected
        setup_seconds = time.perf_counter() - started
        groups = {
            name: resources.target_group(f"sweep-{size}-{name}") for name in ("a", "b", "c1", "c2")
        }
        mapping = {
            "services": [
                {"name": "a", "cluster": cluster, "family": families[0], "container": "app",
                 "containerPort": 8080, "targetGroups": [groups["a"]]},
                {"name": "b", "cluster": cluster, "family": families[1], "container": "app",
                 "containerPort": 8080, "targetGroups": [groups["b"]]},
                {"name": "c", "cluster": cluster, "family": families[2], "container": "app",
                 "containerPort": 8080, "targetGroups": [groups["c1"], groups["c2"]]},
            ]
        }
        sweep = {"action": "sweep", "skipHealthCheck": True}
        counted: list[list] = []
        proxy.take()
        env = harness.function_environment(
            proxy.endpoint, {"REGISTRAR_CONFIG": json.dumps(mapping)}
        )
        sample = harness.run_process(
            [str(binary)],
            env,
            [("sweep-1", sweep), ("sweep-2", sweep)],
            log_path=OUT / "sweep-function.log",
            timeout=600,
            on_posted=lambda _index: counted.append(proxy.take()),
        )
        posted = sample["posted"]
        for run in posted:
            if run["kind"] != "response":
                raise RuntimeError(f"the sweep of {size} tasks failed: {run['body']}")
        first, second = posted[0]["body"], posted[1]["body"]
        direct_env = dict(env, AWS_ENDPOINT_URL=emulator.endpoint)
        direct = harness.run_process(
            [str(binary)], direct_env, [("sweep-3", sweep)],
            log_path=OUT / "sweep-function.log", timeout=600,
        )
        registered = [len(group["register"]) for group in first["groups"]]
        pages = math.ceil(size / 100)
        writes = sum(math.ceil(count / 100) for count in registered)
        rows.append(
            {
                "tasks": size,
                "groups": len(first["groups"]),
                "targetsRegistered": sum(registered),
                "setupSeconds": round(setup_seconds, 1),
                "firstSweepSeconds": (sample["doneMs"][0] - sample["initMs"]) / 1000,
                "secondSweepSeconds": (sample["doneMs"][1] - sample["doneMs"][0]) / 1000,
                "secondSweepDirectSeconds": (direct["doneMs"][0] - direct["initMs"]) / 1000,
                "firstSweepCalls": dict(Counter(op for _, op in counted[0])),
                "secondSweepCalls": dict(Counter(op for _, op in counted[1])),
                "firstSweepTotal": len(counted[0]),
                "secondSweepTotal": len(counted[1]),
                "expectedFirst": 2 * pages + len(first["groups"]) + writes,
                "expectedSecond": 2 * pages + len(second["groups"]),
                "secondSweepChanges": sum(
                    len(g["register"]) + len(g["deregister"]) for g in second["groups"]
                ),
                "maxRssMiB": round(sample["maxRssKiB"] / 1024, 1),
            }
        )
    proxy.close()
    return {"rows": rows}


def artifact_size(binary: Path, zips: list[str]) -> dict:
    """Return the sizes of the binary and of each `ARCH=PATH` zip that exists."""
    shown = binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary
    size = {"binary": str(shown), "binaryBytes": binary.stat().st_size, "zips": []}
    for entry in zips:
        arch, _, path = entry.partition("=")
        if Path(path).exists():
            size["zips"].append({"arch": arch, "path": path, "bytes": Path(path).stat().st_size})
    return size


def handler_cpu(criterion_dir: Path) -> dict:
    """Read the median time per event of each criterion benchmark of benches/handler.rs.

    Criterion keeps its estimates in target/criterion/GROUP/BENCHMARK/new/estimates.json;
    `cargo bench --bench handler` must have run first.
    """
    rows: dict[str, dict] = {}
    for group in ("parse", "handle", "handle_logged"):
        for estimates in sorted((criterion_dir / group).glob("*/new/estimates.json")):
            median = json.loads(estimates.read_text())["median"]
            event = estimates.parent.parent.name
            rows.setdefault(event, {})[group] = {
                "medianNs": median["point_estimate"],
                "lowNs": median["confidence_interval"]["lower_bound"],
                "highNs": median["confidence_interval"]["upper_bound"],
            }
    return {"events": rows}


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:.2f} MiB"


def print_machine(info: dict) -> None:
    print("\n## Machine\n")
    for key, value in info.items():
        print(f"- {key}: {value}")


def print_size(size: dict) -> None:
    print("\n## Artifact size\n")
    print("| artifact | bytes | size |\n|---|---:|---:|")
    print(f"| {size['binary']} | {size['binaryBytes']} | {mib(size['binaryBytes'])} |")
    for artifact in size["zips"]:
        print(
            f"| {artifact['path']} ({artifact['arch']}) | {artifact['bytes']} "
            f"| {mib(artifact['bytes'])} |"
        )


def print_cpu(cpu: dict) -> None:
    print("\n## Handler CPU per event, no network (criterion medians, µs)\n")
    print("| event | parse | handle | handle with log lines |\n|---|---:|---:|---:|")

    def cell(row: dict, group: str) -> str:
        return f"{row[group]['medianNs'] / 1000:.2f}" if group in row else "-"

    for event, row in sorted(cpu["events"].items()):
        print(
            f"| {event} | {cell(row, 'parse')} | {cell(row, 'handle')} "
            f"| {cell(row, 'handle_logged')} |"
        )


def print_cold(cold: dict) -> None:
    print(f"\n## Cold start, one RUNNING event ({cold['rust']['totalMs']['runs']} runs each)\n")
    print("| measure | Rust median (p10-p90) | Python median (p10-p90) | ratio of medians |")
    print("|---|---:|---:|---:|")
    labels = {
        "initMs": "init: start to first request for an event, ms",
        "eventMs": "the event: handed over to response posted, ms",
        "totalMs": "whole: process start to response posted, ms",
        "cpuMs": "CPU time, user + system, ms",
        "maxRssMiB": "peak memory (max RSS), MiB",
    }
    for key, label in labels.items():
        rust, python = cold["rust"][key], cold["python"][key]
        ratio = python["median"] / rust["median"] if rust["median"] else float("inf")
        print(
            f"| {label} | {rust['median']:.1f} ({rust['p10']:.1f}-{rust['p90']:.1f}) "
            f"| {python['median']:.1f} ({python['p10']:.1f}-{python['p90']:.1f}) | {ratio:.1f}x |"
        )
    print("\nOne call to the emulator from a warm boto3 client in the driver, ms:")
    for name, timing in cold["emulatorCallMs"].items():
        print(f"- {name}: median {timing['median']:.1f} (p10 {timing['p10']:.1f}, p90 {timing['p90']:.1f})")


def print_calls(calls: dict) -> None:
    print("\n## AWS calls per event\n")
    print("| event | outcome | calls | in order |\n|---|---|---:|---|")
    for row in calls["cases"]:
        sequence = ", ".join(row["sequence"]) or "none"
        print(f"| {row['case']} | {row['outcome']} | {row['calls']} | {sequence} |")
    left = "still registered" if calls["stoppedTaskTargetLeft"] else "removed"
    print(f"\nthe stopped task's target after its stop events: {left}")


def print_sweep(sweep: dict) -> None:
    print("\n## Sweep scale\n")
    print(
        "| tasks | groups | targets registered | first sweep s | calls (expected) "
        "| second sweep s | calls (expected) | second sweep s, no proxy | peak RSS MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in sweep["rows"]:
        print(
            f"| {row['tasks']} | {row['groups']} | {row['targetsRegistered']} "
            f"| {row['firstSweepSeconds']:.2f} | {row['firstSweepTotal']} ({row['expectedFirst']}) "
            f"| {row['secondSweepSeconds']:.2f} | {row['secondSweepTotal']} ({row['expectedSecond']}) "
            f"| {row['secondSweepDirectSeconds']:.2f} | {row['maxRssMiB']} |"
        )
    for row in sweep["rows"]:
        print(f"\n{row['tasks']} tasks, first sweep: {row['firstSweepCalls']}")
        print(f"{row['tasks']} tasks, second sweep: {row['secondSweepCalls']}")


if __name__ == "__main__":
    sys.exit(main())
