# The live ISO: included by the Makefile (`include live-build/iso.mk`).
# Debian packages the ISO build and its QEMU tests need on the host (installed by `make apt`).
APT_PACKAGES += live-build debootstrap squashfs-tools xorriso isolinux syslinux-common \
	grub-pc-bin grub-efi-amd64-bin qemu-system-x86 qemu-utils ovmf cpio

ISO_BUILD ?= /var/tmp/clonebay-iso
ISO ?= $(ISO_BUILD)/clonebay-live-amd64.iso

.PHONY: iso qemu qemu-test stick

# `make stick` overwrites a whole disk: refuse before anything (even an ISO build) starts.
ifneq ($(filter stick,$(MAKECMDGOALS)),)
ifeq ($(DEV),)
$(error make stick needs DEV=/dev/sdX, the whole USB stick to overwrite (FS=ext4 for ext4))
endif
endif

iso: setup ## build the live ISO (root; cache kept in /var/tmp/clonebay-iso; skips when up to date)
	CLONEBAY_ISO_BUILD=$(ISO_BUILD) PYTHON=$(PY) nice -n 10 live-build/build-iso.sh $(ISO)

qemu: iso ## boot the ISO in QEMU with two demo disks (BIOS; UEFI=1 for OVMF; serial on stdio)
	$(PY) live-build/qemu-demo.py --iso $(ISO) $(if $(UEFI),--uefi)

qemu-test: iso ## boot the ISO in QEMU and run the tests in tests/iso
	CLONEBAY_ISO=$(ISO) $(PY) -m pytest -q tests/iso

stick: iso ## write the ISO to a USB stick, the rest an images partition (DEV=/dev/sdX; FS=ext4)
	$(PY) -m clonebay make-stick $(if $(FS),--fs $(FS)) $(ISO) $(DEV)
