# Strata developer entry points. `make` (or `make help`) lists the targets.
#
# Targets that need PostgreSQL and Redis first run deploy/local/infra.sh up, which reuses
# DATABASE_URL / REDIS_URL from the environment when they answer and otherwise starts private
# servers under .strata/, and then run with DATABASE_URL and REDIS_URL from .strata/infra.env.

CARGO ?= cargo
JOBS ?= 2
# Where cargo puts its output (honours CARGO_TARGET_DIR).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
STRATA := $(TARGET_DIR)/debug/strata
INFRA := deploy/local/infra.sh
# The one build every target runs: the same packages, targets and so features, so that
# `make run` after `make test` (or the reverse) compiles nothing again. (Building only
# strata-cli resolves features differently and recompiled 17 crates.)
BUILD = $(CARGO) build -j$(JOBS) --workspace --all-targets

# Prefix for a recipe line: start (or reuse) the infrastructure, then run the rest of the line
# with DATABASE_URL and REDIS_URL from .strata/infra.env in its environment.
WITH_INFRA = $(INFRA) up && set -a && . ./.strata/infra.env && set +a &&

# The key-encryption key sealing the auth service's signing keys (STRATA_AUTH_KEY_ENCRYPTION_KEY):
# generated once into .strata/kek (readable by its owner only) and reused, unless the
# environment sets one. Prefix for a recipe line, like WITH_INFRA.
KEK_FILE := .strata/kek
WITH_KEK = if [ -z "$${STRATA_AUTH_KEY_ENCRYPTION_KEY:-}" ]; then \
		if [ ! -s $(KEK_FILE) ]; then (umask 077 && mkdir -p .strata && head -c 32 /dev/urandom | base64 > $(KEK_FILE)); fi; \
		STRATA_AUTH_KEY_ENCRYPTION_KEY=$$(cat $(KEK_FILE)); export STRATA_AUTH_KEY_ENCRYPTION_KEY; \
	fi &&

# The API key content's usage shipper sends messages' token usage to analytics with
# (STRATA_CONTENT_USAGE_KEY): a key of the service account usage-shipper@strata.internal, made
# by the CLI into .strata/usage-key and kept while it works, unless the environment sets one.
# Prefix for a recipe line, after the migrations ran.
USAGE_KEY_FILE := .strata/usage-key
WITH_USAGE_KEY = if [ -z "$${STRATA_CONTENT_USAGE_KEY:-}" ]; then \
		$(STRATA) auth service-key --email usage-shipper@strata.internal --name usage-shipper \
			--scope usage:write --file $(USAGE_KEY_FILE) && \
		STRATA_CONTENT_USAGE_KEY=$$(cat $(USAGE_KEY_FILE)) && export STRATA_CONTENT_USAGE_KEY || exit 1; \
	fi &&

# grpcurl, which the commands `make run` prints use, and `make test` runs: Debian has no package
# of it and its releases are on GitHub, so it is grpcurl-rs, a Rust port with the same flags,
# built from crates.io into .strata/tools (about 3 minutes, once).
GRPCURL_VERSION := 0.2.1
GRPCURL_ROOT := .strata/tools/grpcurl-rs-$(GRPCURL_VERSION)
GRPCURL := $(GRPCURL_ROOT)/bin/grpcurl

# Defaults for running the server and the migrations locally; the environment wins.
APP_TARGETS := run db-migrate db-status db-revert db-generate
$(APP_TARGETS): export STRATA_ENV ?= development

.DEFAULT_GOAL := help
.PHONY: help infra-up infra-down infra-status build run test lint bench fmt grpcurl \
	db-migrate db-status db-revert db-generate clean-db

help: ## list the targets
	@echo "usage: make TARGET [JOBS=$(JOBS)] [CARGO=$(CARGO)]"
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-zA-Z_-]*:.*## / { printf "  %-13s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

infra-up: ## start (or reuse) PostgreSQL and Redis, write .strata/infra.env
	$(INFRA) up

infra-down: ## stop the private PostgreSQL and Redis started by infra-up
	$(INFRA) down

infra-status: ## show what is running
	$(INFRA) status

build: ## build the workspace (debug), as run and test do
	$(BUILD)

run: ## start the infrastructure, apply migrations, serve all services (with demo data on an empty database)
	$(WITH_INFRA) $(BUILD) && \
		$(WITH_KEK) $(STRATA) migrate run && \
		$(WITH_USAGE_KEY) exec $(STRATA) serve all --demo

grpcurl: ## install grpcurl (grpcurl-rs, a Rust port with grpcurl's flags, from crates.io) into .strata/tools
	@[ -x $(GRPCURL) ] || $(CARGO) install -j$(JOBS) --locked grpcurl-rs@$(GRPCURL_VERSION) --root $(GRPCURL_ROOT)

# Doctests are not run: nextest does not run them, and `cargo test --doc` links one binary per
# doctest, which is slow on a 2-core machine. Without cargo-nextest, plain `cargo test` runs the
# same targets (libraries, binaries, integration tests).
test: ## build all targets and grpcurl, run the tests (nextest when installed) against the infrastructure
	$(WITH_INFRA) $(BUILD) && $(MAKE) --no-print-directory grpcurl && \
		if $(CARGO) nextest --version >/dev/null 2>&1; then \
			$(CARGO) nextest run --workspace --config-file tests/nextest.toml --build-jobs $(JOBS) --no-fail-fast; \
		else \
			$(CARGO) test -j$(JOBS) --workspace --lib --bins --tests --no-fail-fast; \
		fi

lint: ## check formatting, run clippy with warnings as errors, lint the protos and check them for breaking changes (buf)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings
	deploy/local/buf.sh lint
	deploy/local/buf.sh breaking

bench: ## release build; the suite under load beside this machine's limits (BENCH_SCALE=quick|full) -> target/bench/report.md
	$(CARGO) build -j$(JOBS) --release -p strata-cli
	$(WITH_INFRA) target/release/strata bench --scale $(or $(BENCH_SCALE),quick) --out target/bench $(BENCH_ARGS)

bench-crates: ## the per-crate benchmarks (one call at a time) against the infrastructure
	$(WITH_INFRA) $(CARGO) bench -j$(JOBS) --workspace

fmt: ## format the code
	$(CARGO) fmt --all

db-migrate: ## apply pending migrations
	$(BUILD)
	$(WITH_INFRA) $(STRATA) migrate run

db-status: ## show which migrations are applied
	$(BUILD)
	$(WITH_INFRA) $(STRATA) migrate status

db-revert: ## revert the last applied migration
	$(BUILD)
	$(WITH_INFRA) $(STRATA) migrate revert

db-generate: ## create a new migration: make db-generate NAME=add_widgets
	$(if $(strip $(NAME)),,$(error NAME is required: make db-generate NAME=short_snake_case_name))
	$(BUILD)
	$(STRATA) migrate generate '$(NAME)'

# As root the cluster may live outside the checkout, .strata/pg being a symlink to a
# strata-pg-* directory (see deploy/local/infra.sh); that directory is deleted too.
clean-db: ## stop the infrastructure and delete all its data (.strata/)
	$(INFRA) down
	@if [ -L .strata/pg ]; then \
		dir=$$(readlink -f .strata/pg); \
		case "$$dir" in */strata-pg-*) echo "rm -rf $$dir"; rm -rf "$$dir" ;; esac; \
	fi
	rm -rf .strata
