# Each target sets itself up: `make test` on a fresh machine creates .venv, installs the
# package with its test extra (versions from constraints.txt) and runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs the suite on this many pytest-xdist workers (0: one process, no xdist); each worker
# gives torch its share of the cores (tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: test demo mpp-demo bench study docs docs-serve install clean help transformers-tests

help:
	@echo "make test   create $(VENV) if missing, install hf-vit-repro[test], run the test suite"
	@echo "make demo   create $(VENV) if missing, install, run the offline end-to-end demo"
	@echo "make mpp-demo  create $(VENV) if missing, install, run masked patch prediction vs from scratch (digits)"
	@echo "make bench  create $(VENV) if missing, install, measure speed/memory against transformers and timm"
	@echo "make study  create $(VENV) if missing, install, run the miniature data-size, compute and augreg studies (outputs/studies/)"
	@echo "make docs   create $(VENV) if missing, install, build the documentation site into site/ (strict: broken links fail)"
	@echo "make docs-serve  the same site served at http://127.0.0.1:8000, rebuilt as you edit"
	@echo "make clean  remove $(VENV) and build artefacts"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	$(MAKE) --no-print-directory transformers-tests
	@touch $(STAMP)

# transformers' common test mixins (tests/test_backbone_common.py: BackboneTesterMixin) are not in its
# wheel; its source distribution on PyPI ships them. tests/test_backbone.py runs the mixin from here.
TF_VERSION = $(shell sed -n 's/^transformers==//p' constraints.txt)
TF_TESTS := $(VENV)/transformers-tests
transformers-tests:
	@rm -rf $(TF_TESTS) && mkdir -p $(TF_TESTS)/sdist
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d $(TF_TESTS)/sdist transformers==$(TF_VERSION)
	tar -xzf $(TF_TESTS)/sdist/transformers-$(TF_VERSION).tar.gz -C $(TF_TESTS) --strip-components=2 transformers-$(TF_VERSION)/tests/test_backbone_common.py
	@rm -rf $(TF_TESTS)/sdist

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/vit-repro demo

mpp-demo: $(STAMP)
	$(BIN)/vit-repro mpp-demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_models.py $(BENCH_ARGS)

# The paper's two studies and AugReg's Figure 1 in miniature, offline (recipes/studies/); an interrupted run continues.
study: $(STAMP)
	$(BIN)/vit-repro study data-size recipes/studies/data_size.yaml $(STUDY_ARGS)
	$(BIN)/vit-repro study compute recipes/studies/compute.yaml $(STUDY_ARGS)
	$(BIN)/vit-repro study augreg recipes/studies/augreg.yaml $(STUDY_ARGS)

# The documentation site (mkdocs.yml, docs/; the API pages come from the docstrings).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site
