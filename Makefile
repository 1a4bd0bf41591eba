# One entry point for humans and CI. `make install` then `make demo` / `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DATA ?= var/synth
RUN ?= var/runs/quickstart

.PHONY: install protos test lint demo quickstart up clean chaos screenshots

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	$(MAKE) protos
	# Again, now that the generated `fashion` package exists, so the editable install maps it too.
	$(PIP) install --quiet --no-deps -e .
	touch $@

# Generated protobuf code lands in one package (fashion/, git-ignored), never hand-copied.
protos:
	@if ls protos/fashion/v1/*.proto >/dev/null 2>&1; then \
		$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/fashion/v1/*.proto && \
		touch fashion/__init__.py fashion/v1/__init__.py; \
	else echo "no .proto files yet"; fi

test: install
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check .

# Chaos suite (docs/CHAOS.md): real service processes SIGKILLed, fed poison, slow hosts, pixel floods and gRPC abuse;
# prints one table and exits non-zero when a target is missed. Minutes long, so not part of `make test`.
# `make chaos CHAOS_ARGS="--only poison"`; the results also land in var/chaos/results.json.
CHAOS_ARGS ?=
chaos: install
	PYTHONPATH=$(CURDIR) $(PY) scripts/chaos.py $(CHAOS_ARGS)

# The main job on embedded defaults: synthetic catalogue -> (train FashionNet) -> every service in one
# process -> catalogue through Kafka into Postgres + Qdrant -> consumer photos through gRPC FindSimilar.
demo: install
	$(VENV)/bin/fashion demo

# docs/console_*.png: after `make demo`, starts `fashion up --demo`, drives every console page in headless Chromium.
screenshots: install
	PYTHONPATH=$(CURDIR) $(PY) scripts/console_screenshots.py

# Model only: synthetic DeepFashion data -> train FashionNet -> evaluate it against the ImageNet baseline.
quickstart: install
	$(VENV)/bin/fashion quickstart --data $(DATA) --run $(RUN)

clean:
	rm -rf $(VENV) fashion var .pytest_cache

# The distributed stack in containers (docs/DEPLOY.md): every service from one image (deploy/Dockerfile) on
# Apache Kafka, Qdrant, Postgres and Redis. GPU host by default; `make up VARIANT=cpu` builds the CPU image and
# drops the GPU reservations. Every service in one local process instead: `.venv/bin/fashion up`.
VARIANT ?= cuda
# TLS=1 adds mutual TLS between the containers (deploy/compose.tls.yml; run `make certs` once first).
TLS ?=
COMPOSE := VARIANT=$(VARIANT) docker compose -f docker-compose.yml $(if $(filter cpu,$(VARIANT)),-f deploy/compose.cpu.yml) $(if $(TLS),-f deploy/compose.tls.yml)
.PHONY: down certs

# A private CA and gRPC server/client certificates in deploy/tls/out (docs/DEPLOY.md, "TLS").
certs:
	deploy/tls/make-certs.sh

up:
	$(COMPOSE) up -d

down:
	$(COMPOSE) down
