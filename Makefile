# ptunnel: `make demo` runs the tunnel end to end on this machine, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit unit-pure wheel-check fuzz bench soak clean

# setup.py compiles these with mypyc in place, and the C data plane (build_datapath.py) beside
# them: an edit reinstalls, so the build never runs stale code (tunnel/__init__.py would fall
# back to the pure build, and say so, if it did). The install builds them, or falls back to the
# pure-Python build, and says so.
COMPILED_SOURCES := $(wildcard tunnel/addresses.py tunnel/session/*.py tunnel/channel/*.py tunnel/channel/*/*.py \
                    tunnel/path/*.py tunnel/node/*.py tunnel/forward/*.py \
                    tunnel/session/*.c tunnel/node/*.c)

$(STAMP): pyproject.toml setup.py build_datapath.py $(COMPILED_SOURCES)
	.ci/apt-install gcc python3-dev libssl-dev
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m lab.demo $(if $(NAT),--nat,)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

# The default build (compiled where a C compiler was found), NAT lab included.
unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The same unit tests against the pure-Python build, without those that run whole ptunnel
# processes (tests/suites.py: PURE_SKIPS; the default build runs them).
unit-pure: $(STAMP)
	$(PY) -m tests.suites --pure $(PYTEST_ARGS)

# What `unit` and `unit-pure` run, in less time: the tests on virtual time of both builds run
# beside the NAT lab's (which mostly wait on real timers), at the lowest CPU priority; see
# tests/suites.py.
test: lint typecheck
	$(PY) -m tests.suites $(PYTEST_ARGS)

# The wheel as a user gets it: built, installed into a fresh venv, `ptunnel --version`, the
# shipped samples and unit (checked by systemd-analyze where installed). Needs PyPI or a pip
# cache for the dependencies; .ci/run runs it.
wheel-check: $(STAMP)
	.ci/wheel-check $(PY)

# Fuzz every parser of outside input for SECONDS with a random seed (`make test` runs a short,
# seeded run). Crashing inputs go to tests/fuzz/crashes/ with the command that reproduces them.
SECONDS ?= 60

fuzz: $(STAMP)
	$(PY) -m tests.fuzz.runner --seconds $(SECONDS)

# The peers need system tools: ssh/sshd, socat, node/npm (hyperdht), wireguard-go (NAT lab).
BENCH_PACKAGES := openssh-server openssh-client socat iperf3 wireguard-go wireguard-tools \
                  iptables conntrack iproute2 nftables

bench: $(STAMP)
	.ci/apt-install $(BENCH_PACKAGES)
	@# A node that came with its own npm (NodeSource) conflicts with Debian's npm package.
	command -v npm >/dev/null || .ci/apt-install nodejs npm
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench $(if $(NATLAB),--natlab,)

# The soak test: tunnels left running through the NAT lab while processes, a NAT and the
# rendezvous restart (root; ~21 min; not part of `make test`). IDLE=1: a quiet day instead,
# a use every 5 minutes (MINUTES=60 or more for idle hours). See lab/README.md.
MINUTES  ?= 20
TUNNELS  ?= 20
SOAK_OUT ?= bench/results/soak$(if $(IDLE),-idle,)

soak: $(STAMP)
	.ci/apt-install iptables conntrack iproute2
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m lab.soak --minutes $(MINUTES) --tunnels $(TUNNELS) --out $(SOAK_OUT) \
		$(if $(IDLE),--idle,)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build
	find tunnel -name '*.so' -delete  # the in-place compiled modules (setup.py)
