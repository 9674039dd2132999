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

.PHONY: demo test lint lint-asl fmt check venv build clean fuzz

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

## build: the release artifact for Lambda (needs `pip install cargo-lambda ziglang`).
build:
	cargo lambda build --release --bin ecs-target-registrar

clean:
	cargo clean
	rm -rf $(VENV)
