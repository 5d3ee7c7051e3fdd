# clonebay — `make help` lists the targets. `make demo` and `make test` set up everything they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed
APT_STAMP := .apt-installed

# Debian packages the tool and its tests use (installed when running as root).
APT_PACKAGES := e2fsprogs ntfs-3g dosfstools mtools fdisk gdisk parted libparted-dev pkg-config \
	partclone util-linux python3-venv python3-dev gcc attr udev lz4 fuse3 kmod \
	cryptsetup-bin lvm2 tmux iproute2 iptables udpcast ethtool \
	sshfs openssh-client openssh-server exfatprogs exfat-fuse fusefat samba smbclient cifs-utils \
	nfs-ganesha nfs-ganesha-vfs rpcbind openssl grub2-common busybox-static \
	grub-pc-bin grub-efi-amd64-bin qemu-system-x86 ovmf debootstrap \
	libhivex-bin libwin-hivex-perl gddrescue smartmontools dislocker mdadm

# Bench-only packages (bench/compare.py's peers: Clonezilla, zstd); not needed by the tests.
BENCH_APT_PACKAGES := clonezilla drbl zstd partclone lz4 ntfs-3g e2fsprogs gdisk dosfstools

.DEFAULT_GOAL := help
.PHONY: help setup apt demo test test-fast lint typecheck bench bench-setup clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-12s %s\n", $$1, $$2}'

apt: $(APT_STAMP) ## install the Debian packages (as root; skipped otherwise)
$(APT_STAMP):
	@if [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null \
		&& touch $(APT_STAMP); \
	else echo "not root: skipping apt packages ($(APT_PACKAGES))"; fi

setup: $(STAMP) ## make the virtualenv and install clonebay (editable) with its dev tools
$(STAMP): pyproject.toml | $(APT_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup ## build demo disks, tour the commands on them, then start the TUI on them
	$(PY) -m clonebay.demo

test: setup lint typecheck ## the gates (lint, typecheck), then the whole test suite (root tests run when root)
	$(PY) -m pytest -q --durations=25 tests; rc=$$?; if [ $$rc = 5 ]; then echo "no tests ran"; exit 1; fi; exit $$rc

lint: setup ## ruff and import-linter
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/ruff format --check app tests bench
	$(VENV)/bin/lint-imports

typecheck: setup ## mypy --strict on the package
	$(VENV)/bin/mypy

bench: setup ## map a multi-GiB disk against partclone (more scripts in bench/)
	$(PY) bench/map_speed.py

bench-setup: ## install the bench-only Debian packages (Clonezilla, zstd; as root)
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $(BENCH_APT_PACKAGES) >/dev/null

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) $(APT_STAMP) .pytest_cache .mypy_cache .ruff_cache

include live-build/iso.mk
