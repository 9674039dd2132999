# Targets that run the product or its tests talk to the local emulator (moto on 127.0.0.1)
# only. They run under $(LOCAL): dummy credentials, a fixed region, no profile, no proxy and
# no instance metadata, whatever the caller's shell has set. Only `deploy` uses the caller's
# own AWS credentials.
LOCAL := env -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL \
	-u HTTP_PROXY -u http_proxy -u HTTPS_PROXY -u https_proxy -u ALL_PROXY -u all_proxy \
	AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
	AWS_REGION=us-east-1

# The SAM CLI sends usage data to AWS unless this is set.
export SAM_CLI_TELEMETRY := 0

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
# cargo-lambda and zig come from the deploy venv, and sam build runs cargo lambda.
DEPLOY_PATH := PATH="$(CURDIR)/$(DEPLOY_VENV)/bin:$$PATH"

# Instruction set of the Lambda build: x86_64 or arm64. The template's default is arm64, which
# needs the Rust target aarch64-unknown-linux-gnu (`rustup target add aarch64-unknown-linux-gnu`).
ARCH ?= arm64

.PHONY: demo test lint lint-asl deny fmt check venv build sam-build validate deploy clean fuzz bench bench-quick

## demo: run the registrar against the local emulator: register a running task, deregister it.
demo: $(STAMP)
	$(LOCAL) cargo run --quiet --example demo

## test: unit, request-level and emulator tests.
test: $(STAMP)
	$(LOCAL) cargo test

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

# cargo-deny, built from crates.io into tools/cargo on first use (a few minutes).
CARGO_DENY_VERSION := 0.20.2
CARGO_DENY := tools/cargo/bin/cargo-deny
CARGO_DENY_STAMP := tools/cargo/.cargo-deny-$(CARGO_DENY_VERSION)

## deny: the dependency tree's licenses and banned crates, per deny.toml. It reads crates.io
## only, not the advisory database.
deny: $(CARGO_DENY_STAMP)
	$(CARGO_DENY) check licenses bans

$(CARGO_DENY_STAMP):
	cargo install --locked --quiet --root tools/cargo cargo-deny@$(CARGO_DENY_VERSION)
	touch $(CARGO_DENY_STAMP)

# The fuzzer needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). New corpus entries stay in fuzz/corpus/; crashers land in
# fuzz/artifacts/ and belong in fuzz/regressions/ once fixed, where `make test` replays them.
FUZZ_SECONDS ?= 600

## fuzz: run the fuzz target on the event parsing and decision path for FUZZ_SECONDS (600).
fuzz:
	cd fuzz && cargo +nightly fuzz run handle_payload -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=65536

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

# The SAM CLI, cargo-lambda and zig, pinned in requirements-deploy.txt.
$(DEPLOY_STAMP): requirements-deploy.txt
	python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
	touch $(DEPLOY_STAMP)

## build: the release artifact, target/lambda/ecs-target-registrar/bootstrap.zip (ARCH=x86_64 or arm64).
build: $(DEPLOY_STAMP)
	$(DEPLOY_PATH) cargo lambda build --release --bin ecs-target-registrar --output-format zip \
		$(if $(filter arm64,$(ARCH)),--arm64,--x86-64)
	@ls -l target/lambda/ecs-target-registrar/bootstrap.zip

## validate: the template through the SAM CLI's own linter (offline).
validate: $(DEPLOY_STAMP)
	$(LOCAL) $(DEPLOY_VENV)/bin/sam validate --lint --template-file template.yaml

## sam-build: build the function through SAM's rust-cargolambda builder into .aws-sam/ (offline).
sam-build: $(DEPLOY_STAMP)
	$(LOCAL) $(DEPLOY_PATH) $(DEPLOY_VENV)/bin/sam build --beta-features \
		--parameter-overrides Architecture=$(ARCH)

## deploy: sam build, then sam deploy to the account of your AWS credentials; guided the first
## time, when there is no samconfig.toml yet. The Architecture parameter must match ARCH.
deploy: $(DEPLOY_STAMP)
	$(DEPLOY_PATH) $(DEPLOY_VENV)/bin/sam build --beta-features \
		--parameter-overrides Architecture=$(ARCH)
	@if [ -f samconfig.toml ]; then \
		echo "sam deploy with the settings in samconfig.toml"; \
		$(DEPLOY_VENV)/bin/sam deploy; \
	else \
		$(DEPLOY_VENV)/bin/sam deploy --guided --capabilities CAPABILITY_IAM \
			--parameter-overrides Architecture=$(ARCH); \
	fi

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
	$(LOCAL) nice -n 10 cargo bench --bench handler -- $(CRITERION_ARGS)
	$(LOCAL) nice -n 10 $(BENCH_VENV)/bin/python bench/driver.py \
		--binary $(LAMBDA_DIR)/bootstrap \
		--zip x86_64=$(LAMBDA_DIR)/bootstrap.zip \
		--zip arm64=$(ARM64_DIR)/ecs-target-registrar/bootstrap.zip $(BENCH_ARGS)

$(BENCH_STAMP): bench/requirements.txt
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $(BENCH_STAMP)

clean:
	cargo clean
	rm -rf $(VENV) $(DEPLOY_VENV) $(BENCH_VENV) .aws-sam
