# The two commands a newcomer needs: `make run` and `make test`.
# One build profile (release) serves the service, the tests and the load tool, so CI
# compiles the dependency tree once.

CARGO ?= cargo
BIN := target/release/shelfsync

.PHONY: run test services browser-deps fuzz-deps net-deps ops-deps agent build import serve load-quick festival chaos bench bench-rebuild bench-catalogue bench-forecast soak secantus-probe lint fmt cluster

run: services build import serve

# The binaries first: tests/agent.rs and tests/flaky.rs run target/release/shelfsync-agent,
# which `cargo test` does not build for another package's tests.
test: services browser-deps fuzz-deps net-deps ops-deps
	$(CARGO) build --release --workspace --locked --bins
	$(CARGO) test --release --workspace --locked -- --test-threads=4

services:
	bash scripts/services.sh

browser-deps:
	bash scripts/browser-deps.sh

# schemathesis (pinned) in .venv, for the API fuzz run of tests/openapi.rs.
fuzz-deps:
	bash scripts/fuzz-deps.sh

# iproute2 and nftables for the flaky-link tests (tests/flaky.rs).
net-deps:
	bash scripts/net-deps.sh

# promtool for the checks of deploy/prometheus (tests/ops_kit.rs).
ops-deps:
	bash scripts/ops-deps.sh

build:
	$(CARGO) build --release --workspace --locked

import: build
	$(BIN) import

serve: build
	$(BIN) serve

# Three processes on this machine behind one port (http.port, 8080) with SO_REUSEPORT;
# any of them answers any request (scripts/cluster.sh). Ctrl-C stops all three gracefully.
cluster: services build import
	bash scripts/cluster.sh

# The outlet agent beside a running `make run` (agent/agent.toml; OUTLET=… picks the outlet,
# which needs a pos key in config.toml for forward.via = "http"). Its till webhook:
# http://127.0.0.1:8090/v1/sales.
agent: build
	SHELFSYNC_AGENT__OUTLET=$${OUTLET:-indore-vijay-nagar} target/release/shelfsync-agent --config agent/agent.toml

# A quick hold/cancel run against a running `make run` (10 s).
load-quick: build
	target/release/shelfsync-load --secs 10

# The festival simulator against a running `make run` (30 s of open-loop mixed load at the
# defaults, then the audit; the JSON report goes to load/out/). Pass flags with ARGS="...".
festival: build
	target/release/shelfsync-festival $(ARGS)

# The chaos suite's long form (make test runs the short one): 6 rounds of the four faults.
chaos: services build
	SHELFSYNC_CHAOS_ROUNDS=$${SHELFSYNC_CHAOS_ROUNDS:-6} SHELFSYNC_CHAOS_PHASE_SECS=$${SHELFSYNC_CHAOS_PHASE_SECS:-10} \
		$(CARGO) test --release --locked --test chaos -- --nocapture --exact chaos

# The festival benchmark (load/bench.sh): its own service on 13 outlets x 6,400 SKUs; memory
# with 10k live holds and 1,000 SSE browsers, hold bursts at RATES, sustained rates against
# MongoDB's raw insert_many ceiling, durable confirms, and redis-benchmark's Lua ceiling.
bench: services build
	bash load/bench.sh

# The soak (load/soak.sh): the festival simulator at 3x its default rates for SOAK_MINUTES
# (60) against a service of its own, with a plot over time of latency, ledger lag, shed holds,
# insert latency and every process's CPU and RSS.
soak: services build
	bash load/soak.sh

# Why a SecantusDB that has run for a while inserts slower, and what shelfsync does about it
# (load/secantus-probe.py; servers of its own).
secantus-probe: services
	.venv/bin/python load/secantus-probe.py

# Rebuild and reconciler figures on a 1,000,000-document ledger (its own database).
bench-rebuild: services build
	bash load/bench-rebuild.sh

# The catalogue at chain scale (load/bench-catalogue.sh; also `make bench`'s catalogue part):
# a whole-chain count of 13 x 6,400 lines and the export of a 1,000,000-document ledger.
bench-catalogue: services build
	bash load/bench-catalogue.sh

# Sell-out forecast accuracy (load/src/forecast_accuracy.rs): the service's model against the
# same hour last week, on simulated weeks of hourly sales; no servers.
bench-forecast:
	$(CARGO) run --release --locked -p shelfsync-load --bin shelfsync-forecast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
