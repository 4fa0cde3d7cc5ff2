# pyqmail: make users; make setup check [QMAIL_HOME=dir]; make test; make run
#
# Everything runs on the system's python3 (PYTHON), never on a shim in PATH.
# The installed tree under QMAIL_HOME carries its own copy of the code and of
# its dependencies, so the checkout may be deleted after `make setup`.

PYTHON ?= /usr/bin/python3
QMAIL_HOME ?= /var/qmail
SRC := $(CURDIR)
DEPS := $(SRC)/build/deps
VENV := $(SRC)/.venv
# Debian packages the tests use (real peers and clients, never mocks).
# dnsmasq-base and postfix (for smtp-sink) serve the remote-delivery tests,
# postfix also the interop tests (a private instance on loopback, smtp-source),
# ucspi-tcp, swaks and xinetd the SMTP tests, bsd-mailx and mutt the sendmail
# tests, fetchmail the POP3 tests (pyqmail ships its own checkpassword: Debian
# has no package of it), fastforward and dot-forward the alias tests, iproute2
# (ip) the network-namespace tests;
# apt_install keeps package daemons from starting (policy-rc.d says 101).
APT_TEST_PACKAGES ?= python3-venv python3-pip dnsmasq-base postfix ucspi-tcp swaks xinetd bsd-mailx mutt daemontools fetchmail fastforward dot-forward iproute2 e2fsprogs mount
APT_RUN_PACKAGES ?= python3-venv python3-pip ucspi-tcp
# make bench: the peer (Postfix, with smtp-source and smtp-sink), tcpserver, and a
# venv of its own for matplotlib (the chart only; the measuring runs on PYTHON)
APT_BENCH_PACKAGES ?= python3-venv python3-pip postfix ucspi-tcp
BENCH_VENV := $(SRC)/build/bench-venv
QUICK ?=
BENCH_ARGS ?=
# pyqmail's dependencies (as declared in pyproject.toml)
DEPENDENCIES := "dnspython>=2.3" "pure-cdb>=4.0" "python-daemon>=3.0"

.PHONY: all deps users setup check test test-deps run stop apt-run sendmail-links debian-links bench bench-deps

all: deps

# The pure-Python dependencies, installed once into build/deps for copying
# into each QMAIL_HOME.
deps: $(DEPS)/.stamp
$(DEPS)/.stamp: pyproject.toml setup.py
	rm -rf $(DEPS)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile \
		--target $(DEPS) $(DEPENDENCIES)
	touch $@

users:
	$(PYTHON) -m pyqmail.users $(QMAIL_HOME) $(SRC)

setup: deps
	$(PYTHON) -m pyqmail.install setup $(QMAIL_HOME) $(SRC) $(DEPS) $(PYTHON)
	@echo "To have /usr/sbin/sendmail and /usr/lib/sendmail run $(QMAIL_HOME)/bin/sendmail: make sendmail-links QMAIL_HOME=$(QMAIL_HOME)"

# Offered by setup, never forced: the links MUAs and scripts look for (qmail's
# INSTALL step).  An existing sendmail that is not already such a link is left
# alone: move it away first.
SENDMAIL_LINKS ?= /usr/sbin/sendmail /usr/lib/sendmail
sendmail-links:
	@for l in $(SENDMAIL_LINKS); do \
		if [ -e "$$l" -o -L "$$l" ] && [ "$$(readlink "$$l")" != "$(QMAIL_HOME)/bin/sendmail" ]; then \
			echo "sendmail-links: $$l exists and is not a link to $(QMAIL_HOME)/bin/sendmail; move it away first" >&2; exit 1; \
		fi; \
	done; \
	for l in $(SENDMAIL_LINKS); do \
		mkdir -p "$$(dirname "$$l")" && ln -sfn $(QMAIL_HOME)/bin/sendmail "$$l" && echo "$$l -> $(QMAIL_HOME)/bin/sendmail"; \
	done

# Debian's qmail add-ons (fastforward, dot-forward, ...) have Debian's qmail
# home /var/lib/qmail compiled in: they run bin/qmail-queue and read control/
# there.  This links DEBIAN_QMAIL_HOME/bin/PROGRAM and DEBIAN_QMAIL_HOME/control
# to QMAIL_HOME's, and refuses (changing nothing) if one of them is something else.
DEBIAN_QMAIL_HOME ?= /var/lib/qmail
debian-links:
	$(PYTHON) -m pyqmail.install links $(QMAIL_HOME) $(DEBIAN_QMAIL_HOME)

check:
	$(PYTHON) -m pyqmail.install check $(QMAIL_HOME) $(SRC)

define apt_install
	missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=1; \
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		status=$$?; if [ -n "$$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$status; \
	fi
endef

apt-run:
	@$(call apt_install,$(APT_RUN_PACKAGES))

test-deps:
	@$(call apt_install,$(APT_TEST_PACKAGES))
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		"pytest>=7.2" $(DEPENDENCIES)

test: test-deps bench-deps deps users
	$(VENV)/bin/python -m pytest tests

# A working MTA on this host: dependencies, users, the tree in QMAIL_HOME, a
# default configuration for this host (only where none exists), then start the
# qmail-start tree and qmail-smtpd under qmail-tcpsrv on port 25
# (SMTPD_LISTENER=tcpserver: under the real tcpserver).
SMTPD_LISTENER ?= qmail-tcpsrv
run: apt-run deps users setup check
	SMTPD_LISTENER=$(SMTPD_LISTENER) sh scripts/run.sh $(QMAIL_HOME)

stop:
	sh scripts/stop.sh

# pyqmail beside a private Postfix on loopback, interleaved rounds, ratios:
# make bench [QUICK=1] [BENCH_ARGS="--messages 500 --only smtp,queue"]
# Results: bench-results/results-DATE.json and smtp-DATE.png.
bench-deps:
	@$(call apt_install,$(APT_BENCH_PACKAGES))
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -c "import matplotlib" 2>/dev/null || \
		$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check matplotlib

bench: bench-deps deps users
	$(PYTHON) bench/bench.py $(if $(QUICK),--quick) --chart-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)
