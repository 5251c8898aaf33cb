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

# ---- benchmarks: `make bench-<name>` (see bench/README.md); not part of `make test` or CI ----
# Each target prints a table and writes bench/results/<name>.json, an SVG plot and its section of
# bench/RESULTS.md. Extra options go through BENCH_ARGS, e.g. `make bench-train BENCH_ARGS="--steps 20"`.
BENCH_BIN := target/release/examples
BENCH_DATA := bench/.data
BENCH_RUN = $(ENV) export BENCH_COMMAND="make $@ $(if $(BENCH_ARGS),BENCH_ARGS='$(BENCH_ARGS)')" &&
BENCH_PY := bench/pyg/.venv/bin/python
BENCH_CITATION2 := $(BENCH_DATA)/citation2-size.h5

.PHONY: bench-build bench-hw bench-gemm bench-agg bench-sampler bench-allreduce bench-train bench-scaling \
	bench-pyg bench-pyg-setup bench-node2vec bench-node2vec-scale bench-walks bench-serve bench-all

bench-build: setup
	@$(ENV) cargo build --release --quiet --bin shardsage --example bench_hw --example bench_agg \
		--example bench_sampler --example bench_allreduce --example bench_train \
		--example bench_scaling --example bench_pyg --example bench_gemm --example bench_serve

bench-hw: bench-build
	@$(BENCH_RUN) $(BENCH_BIN)/bench_hw $(BENCH_ARGS)

bench-gemm: bench-build
	@$(BENCH_RUN) $(BENCH_BIN)/bench_gemm $(BENCH_ARGS)

# shardsage serve under load (a generated 200k-paper graph; NODES=2927963 NAME=citation2-size for
# ogbl-citation2's size): start-up, latency, throughput, recall of the fast path.
bench-serve: bench-build
	@$(BENCH_RUN) bench/serve.sh $(BENCH_ARGS)

bench-agg: bench-build
	@$(BENCH_RUN) $(BENCH_BIN)/bench_agg $(BENCH_ARGS)

# A generated graph of ogbl-citation2's size, made once (minutes, several GiB) and reused.
$(BENCH_CITATION2):
	@mkdir -p $(BENCH_DATA)
	@$(ENV) $(BIN) generate --nodes 2927963 --out $@

bench-sampler: bench-build $(BENCH_CITATION2)
	@$(BENCH_RUN) $(BENCH_BIN)/bench_sampler --dataset $(BENCH_CITATION2) $(BENCH_ARGS)

# 2 and 4 ranks on this machine's cores (4 on 2 cores is oversubscribed), each with Open MPI's
# default busy polling and with yield_when_idle, then the report.
bench-allreduce: bench-build
	@$(BENCH_RUN) rm -f bench/results/allreduce-np*.json && \
		for np in 2 4; do for y in 0 1; do \
			OMPI_MCA_mpi_yield_when_idle=$$y mpirun -np $$np --oversubscribe --bind-to none \
				$(BENCH_BIN)/bench_allreduce $(BENCH_ARGS) || exit 1; \
		done; done && \
		$(BENCH_BIN)/bench_allreduce --report

bench-train: bench-build
	@$(BENCH_RUN) $(BENCH_BIN)/bench_train $(BENCH_ARGS)

bench-scaling: bench-build
	@$(BENCH_RUN) $(BENCH_BIN)/bench_scaling $(BENCH_ARGS)

# PyTorch Geometric's environment: torch and torch_geometric from PyPI (torch brings its CUDA
# libraries: several GB, minutes), torch-scatter and torch-sparse built from source once (~25 min
# on 2 cores) and cached as wheels in bench/pyg/.wheels (idempotent).
bench-pyg-setup:
	@bench/pyg/setup.sh

# cit-HepTh by default; BENCH_ARGS="--graph generated --nodes 200000 --epochs 1" for the generated
# graph.
bench-pyg: bench-build bench-pyg-setup
	@$(BENCH_RUN) $(BENCH_BIN)/bench_pyg --python $(BENCH_PY) $(BENCH_ARGS)

# shardsage node2vec against PecanPy + gensim on cit-HepTh (bench/walk/bench.sh; its venv).
bench-node2vec: bench-build
	@$(BENCH_RUN) bench/walk/bench.sh $(BENCH_ARGS)

# Random walks alone against PecanPy's, DeepWalk and node2vec (bench/walk/walks.sh).
bench-walks: bench-build
	@$(BENCH_RUN) bench/walk/walks.sh $(BENCH_ARGS)

# node2vec end to end on the generated graph of ogbl-citation2's size (bench/walk/scale.sh).
bench-node2vec-scale: bench-build
	@$(BENCH_RUN) bench/walk/scale.sh $(BENCH_ARGS)

bench-all: bench-hw bench-gemm bench-agg bench-sampler bench-train bench-allreduce bench-scaling bench-pyg

# The GPU tests and benchmarks for a session with a lent GPU machine (no Rust there): release
# binaries plus every shared library they load, glibc included, in gpu-bundle.tar.xz; on the GPU
# machine `bash scripts/gpu-run.sh all` runs them (docs/gpu-runs.md).
.PHONY: gpu-bundle
gpu-bundle: setup
	@scripts/gpu-bundle.sh
# ---- end of benchmarks ----
