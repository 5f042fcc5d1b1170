"""The VM harness itself: a guest that QEMU ends before its kernel runs init is powered on
again, once (an emulator fault, tests/vm/qemu.py); an end after that fails the test at once."""

from __future__ import annotations

import pytest

from .vm.qemu import VM, EmulatorReset

pytestmark = pytest.mark.vm

CONSOLE = "console=ttyS0,115200n8 panic=-1"     # a panic resets, and -no-reboot ends QEMU


def runs(vm: VM) -> int:
    return vm.log_path.read_text(errors="replace").count("\n$ ")


def test_a_guest_reset_before_init_is_powered_on_again_once(built, tmp_path):
    outdir, _ = built
    # No initramfs: the kernel panics (no root) before it runs anything of ours, every time.
    vm = VM("early", tmp_path, memory=512, kernel=str(outdir / "netboot/vmlinuz"),
            append=CONSOLE, nics=[]).start()
    try:
        with pytest.warns(EmulatorReset, match="before its kernel ran init"):
            with pytest.raises(AssertionError, match=r"the VM exited \(QEMU status 0"):
                vm.expect("never printed", timeout=300)
    finally:
        vm.stop()
    assert runs(vm) == 2
    assert vm.log_path.read_text(errors="replace").count("Kernel panic") == 2
    assert vm.qemu_log_path.with_suffix(".log.1").exists()     # the first run's resets


def test_a_guest_that_ends_after_init_fails_at_once(built, tmp_path, recwarn):
    outdir, _ = built
    # init exits at once: the kernel panics after it ran init, the guest's own doing.
    vm = VM("late", tmp_path, memory=1024, kernel=str(outdir / "netboot/vmlinuz"),
            initrd=str(outdir / "netboot/initrd"), append=f"{CONSOLE} rdinit=/bin/true",
            nics=[]).start()
    try:
        with pytest.raises(AssertionError, match="the VM exited"):
            vm.expect("never printed", timeout=420)
    finally:
        vm.stop()
    assert runs(vm) == 1
    assert not [w for w in recwarn if issubclass(w.category, EmulatorReset)]
