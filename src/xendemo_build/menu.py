"""GRUB legacy menu.lst from grub/menu.lst.j2."""

from __future__ import annotations

from pathlib import Path

from .profile import Menu
from .templates import render

# Where the boot parts live on the CD; menu.lst, the ISO and `boot` agree on these.
XEN = "/boot/xen.gz"
KERNEL = "/boot/vmlinuz"
INITRD = "/boot/initrd.gz"
MENU_LST = "/boot/grub/menu.lst"
STAGE2 = "/boot/grub/stage2_eltorito"


def render_menu(grub_dir: Path, menu: Menu, *, version: str, label: str, profile_name: str) -> str:
    serial = menu.serial
    return render(
        grub_dir, "menu.lst.j2",
        menu=menu, version=version, label=label, profile_name=profile_name,
        xen=XEN, kernel=KERNEL, initrd=INITRD,
        xen_console=(f"console=com{serial.unit + 1} com{serial.unit + 1}={serial.speed},8n1"
                     if serial else "console=vga"),
        dom0_console="console=hvc0" if serial else "console=tty0",
        linux_console=f"console=tty0 console=ttyS{serial.unit},{serial.speed}" if serial else "console=tty0",
    )
