#!/bin/bash
# Build the clonebay live ISO: wheels for the guest's Python, the live-build tree in a scratch
# folder outside the checkout, `lb build`, then the ISO copied to its output path.
#
#   live-build/build-iso.sh [OUTPUT.iso]        (as root; `make iso` runs this)
#
# Environment:
#   CLONEBAY_ISO_BUILD   scratch folder (default /var/tmp/clonebay-iso); its cache/ keeps the
#                        bootstrap stage and every .deb, so the next build is ~2x faster
#   CLONEBAY_ISO_FORCE=1 build even when the ISO is up to date with its inputs
#   CLONEBAY_DIST, CLONEBAY_MIRROR, CLONEBAY_SQUASHFS: see live-build/auto/config
# The ISO is up to date when live-build/, overlay/, app/ and pyproject.toml hash as they did
# for the last build (OUTPUT.inputs): then nothing is rebuilt. Left out: bytecode, tool caches
# and app/*.egg-info (pip install -e writes it, with README.md inside: a checkout that ran
# `make setup` at another time would otherwise rebuild an ISO whose contents are the same).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${CLONEBAY_ISO_BUILD:-/var/tmp/clonebay-iso}"
OUT="${1:-$BUILD/clonebay-live-amd64.iso}"
GUEST_PY=3.13 # trixie's python3; bookworm's would be 3.11
case "${CLONEBAY_DIST:-trixie}" in bookworm) GUEST_PY=3.11 ;; esac
HOST_PY="${PYTHON:-python3}"
[ -x "$REPO/.venv/bin/python" ] && HOST_PY="$REPO/.venv/bin/python"

if [ "$(id -u)" != 0 ]; then
	echo "build-iso.sh: live-build needs root (chroot, mounts): run as root (sudo make iso)" >&2
	exit 1
fi
for tool in lb debootstrap xorriso mksquashfs; do
	command -v "$tool" >/dev/null || {
		echo "build-iso.sh: $tool is missing: apt-get install live-build xorriso squashfs-tools" >&2
		exit 1
	}
done

inputs_hash() {
	(cd "$REPO" && find live-build overlay app pyproject.toml -type f \
		! -path '*/__pycache__/*' ! -path '*/.*_cache/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 |
		sort -z | xargs -0 sha256sum |
		sha256sum | cut -d' ' -f1)
	echo "${CLONEBAY_DIST:-trixie} ${CLONEBAY_SQUASHFS:-zstd}"
}
HASH="$(inputs_hash | tr '\n' ' ')"
if [ -z "${CLONEBAY_ISO_FORCE:-}" ] && [ -f "$OUT" ] && [ "$(cat "$OUT.inputs" 2>/dev/null)" = "$HASH" ]; then
	echo "ISO up to date: $OUT ($(du -m "$OUT" | cut -f1) MiB)"
	exit 0
fi

START=$(date +%s)
mkdir -p "$BUILD/work" "$BUILD/src"
WORK="$BUILD/work"

echo "== wheels for Python $GUEST_PY"
rm -rf "$BUILD/src" "$BUILD/wheels"
mkdir -p "$BUILD/src" "$BUILD/wheels"
# Build clonebay's wheel from a copy, so that setuptools leaves no build/ in the checkout.
cp -a "$REPO/pyproject.toml" "$REPO/README.md" "$BUILD/src/"
cp -a "$REPO/app" "$BUILD/src/app"
find "$BUILD/src" -name __pycache__ -prune -exec rm -rf {} + -o -name '*.egg-info' -prune -exec rm -rf {} +
"$HOST_PY" -m pip wheel -q --no-deps --disable-pip-version-check -w "$BUILD/wheels" "$BUILD/src"
# Its dependencies as the guest's wheels (C extensions built for cp3xx manylinux); pyparted has
# no wheel on PyPI and comes from Debian (python3-parted) instead.
"$HOST_PY" - "$REPO/pyproject.toml" >"$BUILD/wheels/requirements.txt" <<'PY'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if not d.lower().startswith("pyparted")))
PY
"$HOST_PY" -m pip download -q --disable-pip-version-check --only-binary=:all: \
	--python-version "$GUEST_PY" --implementation cp --abi "cp${GUEST_PY/./}" \
	--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
	-d "$BUILD/wheels" -r "$BUILD/wheels/requirements.txt" 2> >(grep -v "is ignored" >&2)
ls "$BUILD/wheels"

echo "== live-build tree in $WORK"
cd "$WORK"
if [ -f config/common ]; then lb clean >/dev/null 2>&1 || true; fi
rm -rf auto config
cp -a "$REPO/live-build/auto" "$REPO/live-build/config" .
mkdir -p config/includes.chroot
cp -a "$REPO/overlay/." config/includes.chroot/
cp -a "$BUILD/wheels" config/wheels
lb config >"$BUILD/config.log" 2>&1 || { tail -30 "$BUILD/config.log"; exit 1; }

echo "== lb build (log: $BUILD/build.log)"
if ! lb build >"$BUILD/build.log" 2>&1; then
	tail -40 "$BUILD/build.log"
	echo "build-iso.sh: lb build failed, full log: $BUILD/build.log" >&2
	exit 1
fi
ISO="$(ls -t "$WORK"/*.iso 2>/dev/null | head -1)"
[ -n "$ISO" ] || { tail -40 "$BUILD/build.log"; echo "build-iso.sh: no ISO made" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
mv -f "$ISO" "$OUT"
# Kernel and initrd beside the ISO, for direct boots (tests, PXE-like lab setups).
mkdir -p "$OUT.boot"
cp -f "$WORK"/binary/live/vmlinuz "$WORK"/binary/live/initrd.img "$OUT.boot/"
sed -n 's/^[[:space:]]*append //p' "$WORK"/binary/isolinux/live.cfg | head -1 >"$OUT.boot/cmdline"
echo "$HASH" >"$OUT.inputs"
SECS=$(($(date +%s) - START))
echo "ISO: $OUT"
echo "size: $(du -m "$OUT" | cut -f1) MiB ($(stat -c %s "$OUT") bytes); built in $((SECS / 60)) min $((SECS % 60)) s"
