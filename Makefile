# The two commands of README.md: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build test unit e2e demo crds docs lint cluster-up cluster-down plugin install-plugin

all: build

build:
	$(CARGO) build --locked

## test: every test, unit and end-to-end (starts the local control plane if needed)
test: build cluster-up
	$(CARGO) test --locked --workspace

## demo: build, start the control plane and the controller, apply examples/, show status
demo: build cluster-up
	hack/demo

## plugin: target/debug/kubectl-tenure, the kubectl plugin (a symlink: the same binary as tenure, which
## dispatches on the name it is invoked by); put target/debug on PATH, or `make install-plugin`
plugin: build
	ln -sf tenure target/debug/kubectl-tenure

## install-plugin: a release build of tenure in $(PREFIX)/bin (default ~/.local), with kubectl-tenure beside it
PREFIX ?= $(HOME)/.local
install-plugin:
	$(CARGO) install --locked --path . --root $(PREFIX)
	ln -sf tenure $(PREFIX)/bin/kubectl-tenure

## crds: regenerate crds/ (and the chart's copy) from the API types (a unit test fails when they drift)
crds:
	$(CARGO) run --locked --quiet -- crds > crds/tenure.dev.yaml
	cp crds/tenure.dev.yaml charts/tenure/crds/tenure.dev.yaml

## docs: regenerate docs/api.md, the API reference, from the API types (a unit test fails when it drifts)
docs:
	mkdir -p docs
	$(CARGO) run --locked --quiet -- docs > docs/api.md

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

cluster-up:
	hack/cluster up

cluster-down:
	hack/cluster down
