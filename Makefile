# FrozenLens developer entry points. Every target is idempotent: a second run
# reuses the virtualenv, the installed packages and the fetched data.
#
#   make setup   create .venv and install FrozenLens (+ the CPU torch wheel)
#   make demo    setup, then index a real photo archive and search it in several languages
#   make test    setup with dev + clip + serve + flame + mcp extras, chromium, PostgreSQL and the emoji font + CLDR, fetch the test photos, lint (ruff)
#                and check the layer contracts (import-linter, .importlinter), run the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The light default: the CPU build of torch, which pip finds on local disk on
# the project's build machines. Override, e.g. TORCH_SPEC="torch==2.14.1".
TORCH_SPEC ?= torch==2.13.0
# The test set-up also exercises the `clip` extra (open_clip needs torchvision),
# and PyPI's torchvision only works here with exactly this pair.
TEST_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DATA   ?= .cache/testdata
DEMO_INDEX ?= .cache/demo-index

.PHONY: setup setup-dev browser postgres emoji-data demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.setup-done: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-done: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TEST_TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev,clip,serve,flame,mcp]"
	touch $@ $(VENV)/.setup-done

setup: $(VENV)/.setup-done

setup-dev: $(VENV)/.dev-done

demo: setup
	$(BIN)/python scripts/fetch_test_data.py --dest $(DATA)
	$(BIN)/frozenlens index $(DATA)/kphotoalbum --captions $(DATA)/kphotoalbum/captions.jsonl --index $(DEMO_INDEX)
	$(BIN)/frozenlens info --index $(DEMO_INDEX)
	@for q in "a dog" "un lapin" "ein Billardtisch" "飞机" "собака" "the northern part of Denmark"; do \
		echo; echo "== search: $$q"; \
		$(BIN)/frozenlens search "$$q" -k 3 --index $(DEMO_INDEX); \
	done

# Browser tests drive Debian's chromium (Playwright's own browser download
# cannot work offline); installed once, as root, from the Debian mirror.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The store, engine, crash-safety and concurrency tests run on SQLite and on a
# real PostgreSQL server that the tests start on loopback (tests/pg.py); Debian's
# server binaries are installed once, as root, from the Debian mirror.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Emoji drawn from Debian's colour emoji font and named in many languages by
# Unicode CLDR: extra training data for the reranker (frozenlens.eval.emoji).
emoji-data:
	@{ [ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] && [ -d /usr/share/unicode/cldr/common/annotations ]; } || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji unicode-cldr-core >/dev/null; }

test: setup-dev browser postgres emoji-data
	$(BIN)/python scripts/fetch_test_data.py --dest $(DATA)
	$(BIN)/python scripts/fetch_tuxpaint.py --dest $(DATA)/tuxpaint
	$(BIN)/python scripts/fetch_fashion_mnist.py --dest $(DATA)/fashion-mnist
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/lint-imports
	FROZENLENS_TESTDATA=$(abspath $(DATA)) $(BIN)/python -m pytest -q

bench: setup-dev emoji-data
	$(BIN)/python scripts/fetch_test_data.py --dest $(DATA)
	$(BIN)/python scripts/fetch_tuxpaint.py --dest $(DATA)/tuxpaint
	$(BIN)/python scripts/build_emoji_set.py --dest $(DATA)/emoji
	$(BIN)/python scripts/fetch_fashion_mnist.py --dest $(DATA)/fashion-mnist
	FROZENLENS_TESTDATA=$(abspath $(DATA)) $(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .cache build src/*.egg-info
