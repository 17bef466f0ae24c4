# knetcheck: `make test` (the main job) and `make check` (the project's own tests).
# Both set themselves up on a fresh machine (scripts/setup.sh).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := .make-stamp-setup

CLUSTER ?= auto
CNI ?=
CONTEXT ?=
KIND_NODE_IMAGE ?=
K8S_VERSION ?=
KEEP_CLUSTER ?=
ALLOW_DESTRUCTIVE ?=
PYTEST_ARGS ?=

TEST_OPTS := --cluster=$(CLUSTER)
TEST_OPTS += $(if $(CNI),--cni=$(CNI))
TEST_OPTS += $(if $(KUBECONFIG),--kubeconfig=$(KUBECONFIG))
TEST_OPTS += $(if $(CONTEXT),--context=$(CONTEXT))
TEST_OPTS += $(if $(KIND_NODE_IMAGE),--node-image=$(KIND_NODE_IMAGE))
TEST_OPTS += $(if $(K8S_VERSION),--k8s-version=$(K8S_VERSION))
TEST_OPTS += $(if $(KEEP_CLUSTER),--keep-cluster)
TEST_OPTS += $(if $(ALLOW_DESTRUCTIVE),--allow-destructive)

.PHONY: setup test check lint unit leftovers lab-up lab-down doctor clean

$(STAMP): pyproject.toml scripts/setup.sh
	@scripts/setup.sh
	@touch $@

setup: $(STAMP)

## test: the suite against kind (Docker engine answers) or else the embedded lab
test: $(STAMP)
	@$(VENV)/bin/knetcheck test $(TEST_OPTS) -- $(PYTEST_ARGS)

## check: lint + the project's own tests (lab end-to-end included) + a leftovers check
check: $(STAMP) lint unit leftovers

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/actionlint .github/workflows/*.yml

unit: $(STAMP)
	$(VENV)/bin/pytest -p no:cacheprovider --durations=20 $(PYTEST_ARGS)

leftovers:
	@scripts/leftovers.sh

lab-up: $(STAMP)
	@$(VENV)/bin/knetcheck lab up

lab-down: $(STAMP)
	@$(VENV)/bin/knetcheck lab down

clean:
	rm -rf $(VENV) $(STAMP) .knetcheck reports .mypy_cache .ruff_cache
