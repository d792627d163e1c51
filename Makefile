# The two commands of the README, and a few more. Every target sets up first (seconds
# when nothing changed), so each works on a fresh clone.
.PHONY: setup run test bench shell clean
SHELL := /bin/bash
ARGS ?=
PYTEST_ARGS ?=

setup:
	@scripts/setup.sh

run: setup
	@scripts/with_env.sh python -m weld_vision_ros.examples.demo $(ARGS)

test: setup
	@scripts/with_env.sh python -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in benchmarks/bench_*.py; do scripts/with_env.sh python $$b || exit 1; done

shell: setup
	@bash --rcfile <(echo 'source ~/.bashrc 2>/dev/null; source env.sh; PS1="(weld) $$PS1"')

clean:
	rm -rf build install log .ws env.sh
