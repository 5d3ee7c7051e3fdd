# The live ISO: included by the Makefile (`include live-build/iso.mk`).
# Debian packages the ISO build and its QEMU tests need on the host (installed by `make apt`).
APT_PACKAGES += live-build debootstrap squashfs-tools xorriso isolinux syslinux-common \
	grub-pc-bin grub-efi-amd64-bin qemu-system-x86 qemu-utils ovmf cpio

ISO_BUILD ?= /var/tmp/clonebay-iso
ISO ?= $(ISO_BUILD)/clonebay-live-amd64.iso

.PHONY: iso qemu qemu-test

iso: setup ## build the live ISO (root; cache kept in /var/tmp/clonebay-iso; skips when up to date)
	CLONEBAY_ISO_BUILD=$(ISO_BUILD) PYTHON=$(PY) nice -n 10 live-build/build-iso.sh $(ISO)

qemu: iso ## boot the ISO in QEMU with two demo disks (BIOS; UEFI=1 for OVMF; serial on stdio)
	$(PY) live-build/qemu-demo.py --iso $(ISO) $(if $(UEFI),--uefi)

qemu-test: iso ## boot the ISO in QEMU and run the tests in tests/iso
	CLONEBAY_ISO=$(ISO) $(PY) -m pytest -q tests/iso
