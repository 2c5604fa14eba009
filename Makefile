# Everything sets itself up: a fresh clone with Python 3.11+ needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench e2e image lock clean control-plane

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/herald demo

# The real-API-server tier: kube-apiserver and kube-controller-manager built once per machine from
# Debian's sources (~4 min), then reused from ~/.cache/herald (or HERALD_CONTROL_PLANE_BIN).
control-plane:
	@bash tests/cluster/build-control-plane.sh >/dev/null

# Two processes on the two cores: the pure and emulator tiers, and beside them the tiers that run
# a real API server (their log follows). Either failing fails the target.
test: $(STAMP) control-plane
	@$(BIN)/python -m pytest -q -p no:cacheprovider tests/real tests/e2e > .test-cluster.log 2>&1 & \
	cluster=$$!; \
	$(BIN)/python -m pytest -q tests/unit tests/integration; local=$$?; \
	wait $$cluster; remote=$$?; \
	echo "---- tests/real, tests/e2e (exit $$remote)"; cat .test-cluster.log; \
	test $$local -eq 0 -a $$remote -eq 0

# Every figure next to a baseline measured in the same run; writes bench/RESULTS.md (~6 min).
bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Against whatever KUBECONFIG points at (kind, k3d, a dev cluster); `make test` runs the same suite
# against its own control plane.
e2e: $(STAMP)
	HERALD_E2E=1 $(BIN)/python -m pytest -q tests/e2e

image:
	docker build -t herald:$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) .

# Re-pin every dependency after changing ranges in pyproject.toml.
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet '.[dev,demo]'
	.lockvenv/bin/pip freeze --exclude herald > constraints.txt
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
