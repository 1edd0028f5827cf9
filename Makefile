# eventfleet: `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: help install tools tools-terraform terraform-validate demo test lint bench kafka-up kafka-down registry-up registry-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/eventfleet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/eventfleet ## create .venv and install eventfleet with its dev tools

tools: ## build helm into .cache/tools/bin (go install; skipped when already built)
	./scripts/tools.sh

demo: install ## the main job: local Kafka, 1M generated events, workers, results, events/s
	$(BIN)/eventfleet demo

test: install tools tools-terraform ## lint, type-check, then every test (own Kafka on :19092, registry on :18081)
	$(BIN)/ruff check consumer tests
	$(BIN)/ruff format --check consumer tests
	$(BIN)/mypy
	$(BIN)/pytest

bench: install ## the benchmark: raw, naive, Quix Streams and eventfleet on 2M events (about 10 min)
	$(BIN)/python bench/run.py --events 2000000 --repeat 3

tools-terraform: ## build terraform (Go module proxy) and checkov (PyPI) into .cache/tools, once
	scripts/tools-terraform.sh

terraform-validate: ## terraform init + validate of terraform/examples (needs registry.terraform.io)
	scripts/terraform-validate.sh

kafka-up: install ## start the local Kafka on 127.0.0.1:9092
	$(BIN)/eventfleet kafka up

kafka-down: install ## stop the local Kafka
	$(BIN)/eventfleet kafka down

registry-up: install ## start the local schema registry (Apicurio) on 127.0.0.1:8081
	$(BIN)/eventfleet registry up

registry-down: install ## stop the local schema registry
	$(BIN)/eventfleet registry down

clean: ## remove the virtualenv, demo data and caches (not the cached Kafka jars and registry)
	rm -rf $(VENV) .eventfleet .mypy_cache .ruff_cache .pytest_cache
