# The two commands a newcomer needs: `make run` and `make test`.
# One build profile (release) serves the service, the tests and the load tool, so CI
# compiles the dependency tree once.

CARGO ?= cargo
BIN := target/release/shelfsync

.PHONY: run test services browser-deps build import serve load-quick lint fmt

run: services build import serve

test: services browser-deps
	$(CARGO) test --release --workspace --locked -- --test-threads=4

services:
	bash scripts/services.sh

browser-deps:
	bash scripts/browser-deps.sh

build:
	$(CARGO) build --release --workspace --locked

import: build
	$(BIN) import

serve: build
	$(BIN) serve

# A quick hold/cancel run against a running `make run` (10 s).
load-quick: build
	target/release/shelfsync-load --secs 10

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
