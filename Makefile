# Every target that talks to AWS APIs talks to the local emulator (moto on 127.0.0.1) only.
# These exports make sure nothing falls back to an instance metadata address or real
# credentials, whatever the caller's shell has set.
export AWS_EC2_METADATA_DISABLED := true
export AWS_ACCESS_KEY_ID := testing
export AWS_SECRET_ACCESS_KEY := testing
export AWS_REGION := us-east-1
unexport AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint fmt check venv build clean

## demo: run the registrar against the local emulator: register a running task, deregister it.
demo: $(STAMP)
	cargo run --quiet --example demo

## test: unit, request-level and emulator tests.
test: $(STAMP)
	cargo test

## lint: formatting, clippy and the SAM template.
lint: $(STAMP)
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml

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
