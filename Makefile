# shardsage: `make demo` runs the whole path on a generated citation graph; `make test` runs the
# tests. Both install what they need first (scripts/setup.sh, idempotent).
SHELL := /bin/bash
ENV := source scripts/env.sh &&
BIN := target/release/shardsage
DEMO := demo

.PHONY: setup build demo test lint fmt clean

setup:
	@scripts/setup.sh

build: setup
	@$(ENV) cargo build --release --quiet

demo: build
	@$(ENV) scripts/demo.sh $(BIN) $(DEMO)

test: setup
	@$(ENV) scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	rm -rf target $(DEMO)
