# Every target that talks to AWS APIs talks to the local emulator (moto on 127.0.0.1) only.
# These exports make sure nothing falls back to an instance metadata address or real
# credentials, whatever the caller's shell has set.
export AWS_EC2_METADATA_DISABLED := true
export AWS_ACCESS_KEY_ID := testing
export AWS_SECRET_ACCESS_KEY := testing
export AWS_REGION := us-east-1
unexport AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL HTTP_PROXY http_proxy HTTPS_PROXY https_proxy ALL_PROXY all_proxy

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint lint-asl fmt check venv build bench bench-quick clean

## demo: run the registrar against the local emulator: register a running task, deregister it.
demo: $(STAMP)
	cargo run --quiet --example demo

## test: unit, request-level and emulator tests.
test: $(STAMP)
	cargo test

## lint: formatting, clippy, the SAM template and the state machine definition.
lint: $(STAMP)
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml
	$(MAKE) --no-print-directory lint-asl

# asl-validator (npm) checks the state machine's states, transitions, paths and intrinsic
# functions, which cfn-lint does not open. It is installed into tools/node on first use.
ASL_VALIDATOR_VERSION := 4.0.0
ASL_VALIDATOR := tools/node/node_modules/.bin/asl-validator
ASL_STAMP := tools/node/.asl-validator-$(ASL_VALIDATOR_VERSION)

## lint-asl: check statemachine/health-wait.asl.json with asl-validator (needs node and npm).
lint-asl: $(ASL_STAMP)
	$(ASL_VALIDATOR) --json-path statemachine/health-wait.asl.json

$(ASL_STAMP):
	npm install --no-save --no-audit --no-fund --prefix tools/node asl-validator@$(ASL_VALIDATOR_VERSION)
	touch $(ASL_STAMP)

## check: everything CI runs.
check: lint test

fmt:
	cargo fmt --all

## venv: the Python tools the tests need (moto, cfn-lint), pinned in requirements-dev.txt.
venv: $(STAMP)

$(STAMP): requirements-dev.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

## build: the release artifact for Lambda (needs `pip install cargo-lambda ziglang`).
build:
	cargo lambda build --release --bin ecs-target-registrar

# The benchmarks' own tools (cargo-lambda, ziglang, awslambdaric, boto3), kept apart from the
# test venv. See BENCHMARKS.md for what `make bench` measures.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
LAMBDA_DIR := target/lambda/ecs-target-registrar
ARM64_DIR := target/lambda-arm64
# Extra arguments of bench/driver.py, for example `--sections cold --runs 100`.
BENCH_ARGS ?=
CRITERION_ARGS ?= --warm-up-time 1 --measurement-time 3

## bench: release build, handler CPU (criterion), then cold start, memory, API calls and sweep
## scale against the local emulator; tables on stdout and in target/bench/results.json.
bench: $(STAMP) $(BENCH_STAMP)
	$(MAKE) --no-print-directory bench-run CRITERION_ARGS="$(CRITERION_ARGS)" BENCH_ARGS="$(BENCH_ARGS)"

## bench-quick: the same with fewer runs and sweeps of 100 and 1,000 tasks, as a smoke test.
bench-quick: $(STAMP) $(BENCH_STAMP)
	$(MAKE) --no-print-directory bench-run CRITERION_ARGS="--quick" BENCH_ARGS="--quick $(BENCH_ARGS)"

# cargo-lambda finds Zig through `python3 -m ziglang`, so the bench venv goes first on PATH.
# arm64 is built only when rustup already has the aarch64 standard library: fetching it is not
# part of this target.
bench-run:
	PATH="$(CURDIR)/$(BENCH_VENV)/bin:$$PATH" nice -n 10 cargo lambda build --release \
		--bin ecs-target-registrar --output-format zip
	if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then \
		PATH="$(CURDIR)/$(BENCH_VENV)/bin:$$PATH" nice -n 10 cargo lambda build --release \
			--arm64 --bin ecs-target-registrar --output-format zip --lambda-dir $(ARM64_DIR); \
	else \
		echo "arm64: skipped, rustup has no aarch64-unknown-linux-gnu standard library"; \
	fi
	nice -n 10 cargo bench --bench handler -- $(CRITERION_ARGS)
	nice -n 10 $(BENCH_VENV)/bin/python bench/driver.py \
		--binary $(LAMBDA_DIR)/bootstrap \
		--zip x86_64=$(LAMBDA_DIR)/bootstrap.zip \
		--zip arm64=$(ARM64_DIR)/ecs-target-registrar/bootstrap.zip $(BENCH_ARGS)

$(BENCH_STAMP): bench/requirements.txt
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $(BENCH_STAMP)

clean:
	cargo clean
	rm -rf $(VENV) $(BENCH_VENV)
