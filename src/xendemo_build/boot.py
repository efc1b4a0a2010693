"""Boot an ISO in QEMU (TCG) over a serial console: `xendemo boot ISO [--entry N] [--disk]`.

The console is QEMU's `-serial stdio` on two pipes (`-display none -monitor none`, not
`-nographic`): nothing the guest prints before we start reading is lost (a socket chardev with
`wait=off` drops it), no socket path or port can collide, the monitor cannot steal keys (under
`-nographic` Ctrl-A is QEMU's mux escape, and Xen uses Ctrl-A x3 to switch its console) and
QEMU's own messages arrive separately on stderr.

GRUB legacy is driven by keys once its menu is on the screen ("Use the ^ and v keys ..."):
'^' once per entry (the highlight does not wrap, so this reaches entry 0 whatever `default`
says), 'v' N times, Enter. Keys sent before the menu is drawn are partly lost. The first key
stops GRUB's countdown. "Booting 'TITLE'" is then checked against the title of entry N.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import run
from .errors import BuildError

READY = "xendemo: init reached"  # printed by the booted system's /etc/inittab sysinit line
STAGE_PREFIX = "linuxrc: "  # the generated /linuxrc prints one such line per stage
FAILED_PREFIX = "linuxrc: FAILED"  # ... and this one when it gives up and starts a shell

MENU_LST = "/boot/grub/menu.lst"
MENU_PROMPT = "Use the ^ and v keys"  # GRUB 0.97 menu header
HIDDEN_PROMPT = "Press `ESC' to enter the menu"  # GRUB 0.97 with `hiddenmenu`
GRUB_FAILED = "Press any key to continue"  # GRUB 0.97 after "Error NN: ..."
BOOTING_RE = re.compile(r"Booting '([^\n]*)'\n")
TAIL_LINES = 20
MAX_MENU_BYTES = 1 << 20
MAX_LINE = 4096
KEY_GAP = 0.05  # seconds between keys
LINE_GRACE = 2.0  # seconds to wait for the end of a line that holds `expect`
MENU_SETTLE = 0.2  # seconds between seeing the menu header and the first key
OS_LINE_RE = re.compile(r"^\(XEN\) |^\[\s*\d+\.\d+\] ")

# Cursor positioning / erase-display become line breaks (GRUB draws its menu with them);
# every other escape sequence and control character is dropped.
_CSI_BREAK_RE = re.compile(r"\x1b\[[0-9;?]*[Hf]|\x1b\[[0-9;?]*J")
_ESC_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[@-Z\\-_]")
_ESC_PARTIAL_RE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*|[()])?$")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class BootResult:
    reached: bool
    seconds: float
    last_stage: str | None
    log_path: Path
    tail: list[str]  # the last ~20 console lines


def menu_titles(iso: Path) -> list[str]:
    """The `title`s of the ISO's boot/grub/menu.lst, in menu order."""
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibException

    cd = pycdlib.PyCdlib()
    try:
        with open(iso, "rb") as fp:
            try:
                cd.open_fp(fp)
            except PyCdlibException as e:
                raise BuildError(f"{iso}: not an ISO 9660 image ({e})") from None
            try:
                data = _read_menu(cd)
            finally:
                cd.close()
    except OSError as e:
        raise BuildError(f"{iso}: cannot read: {e.strerror or e}") from None
    if data is None:
        raise BuildError(f"{iso}: no {MENU_LST} on the image; not a GRUB legacy xendemo CD")
    titles = []
    for line in data.decode("utf-8", "replace").splitlines():
        m = re.match(r"\s*title(?:\s*=\s*|\s+)(.*)$", line)
        if m:
            titles.append(m.group(1).strip())
    return titles


def _read_menu(cd) -> bytes | None:
    from pycdlib.pycdlibexception import PyCdlibException

    tries = []
    if cd.has_rock_ridge():
        tries.append({"rr_path": MENU_LST})
    if cd.has_joliet():
        tries.append({"joliet_path": MENU_LST})
    tries.append({"iso_path": "/BOOT/GRUB/MENU.LST;1"})
    for kw in tries:
        try:
            with cd.open_file_from_iso(**kw) as f:
                return f.read(MAX_MENU_BYTES)
        except PyCdlibException:
            continue
    return None


def check_entry(iso: Path, entry: int) -> list[str]:
    """Return the menu's titles if `entry` is one of them, or raise BuildError."""
    titles = menu_titles(iso)
    k = len(titles)
    if k == 0:
        raise BuildError(f"{iso}: {MENU_LST} has no 'title' entries")
    if not 0 <= entry < k:
        raise BuildError(f"{iso}: --entry {entry}: the menu has only {k} entries (0-{k - 1})")
    return titles


def check_disk_bootable(iso: Path) -> None:
    try:
        with open(iso, "rb") as f:
            f.seek(510)
            sig = f.read(2)
    except OSError as e:
        raise BuildError(f"{iso}: cannot read: {e.strerror or e}") from None
    if sig != b"\x55\xaa":
        raise BuildError(f"{iso}: not disk-bootable (no MBR boot signature); "
                         "boot it as a CD (without --disk)")


def qemu_argv(qemu: str, iso: Path, *, disk: bool, memory_mb: int) -> list[str]:
    image = str(iso.resolve()).replace(",", ",,")
    if disk:
        # IDE hard disks refuse readonly=on ("Block node is read-only"): snapshot=on opens the
        # image read-only and sends the guest's writes to a throwaway overlay.
        drive = [f"file={image},format=raw,if=ide,media=disk,snapshot=on", "-boot", "c"]
    else:
        drive = [f"file={image},format=raw,if=ide,media=cdrom,readonly=on", "-boot", "d"]
    return [qemu, "-accel", "tcg", "-m", str(memory_mb),
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-parallel", "none",
            "-no-reboot", "-drive", *drive]


class _Console:
    """Turns the raw serial byte stream into clean lines."""

    def __init__(self, emit: Callable[[str], None]):
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._raw_tail = ""  # an escape sequence cut by the chunk boundary
        self.partial = ""  # cleaned text after the last line break
        self._emit = emit

    def feed(self, data: bytes) -> str:
        """Consume bytes; emit complete lines; return the cleaned new text (for prompt matching)."""
        raw = self._raw_tail + self._decoder.decode(data)
        cut = raw.rfind("\x1b")
        if cut != -1 and _ESC_PARTIAL_RE.fullmatch(raw, cut) and len(raw) - cut < 64:
            raw, self._raw_tail = raw[:cut], raw[cut:]
        else:
            self._raw_tail = ""
        text = _clean(raw)
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self._line(line)
        if len(self.partial) > MAX_LINE:
            self.flush()
        return text

    def flush(self) -> None:
        line, self.partial = self.partial, ""
        self._line(line)

    def _line(self, line: str) -> None:
        line = line.rstrip()
        if line.strip():
            self._emit(line)


def _clean(raw: str) -> str:
    raw = _CSI_BREAK_RE.sub("\n", raw)
    raw = _ESC_RE.sub("", raw)
    raw = raw.replace("\r", "")
    return _CTRL_RE.sub("", raw)


def _death_signal() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGKILL QEMU if we die without cleaning up (Linux)."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return preexec


def boot_iso(iso: Path, *, entry: int = 0, disk: bool = False, timeout: float = 180.0,
             log_path: Path, expect: str = READY, memory_mb: int = 1024,
             on_line: Callable[[str], None] | None = None) -> BootResult:
    """Boot `iso` in QEMU, pick GRUB menu entry `entry`, and wait for a console line with `expect`.

    Returns as soon as `expect` is seen (reached=True) or on timeout / QEMU exit / a GRUB
    error (reached=False). QEMU is always killed and reaped before this returns or raises.
    """
    iso = Path(iso)
    log_path = Path(log_path)
    if not iso.is_file():
        raise BuildError(f"{iso}: no such image file")
    titles = check_entry(iso, entry)
    if disk:
        check_disk_bootable(iso)
    qemu = run.find_tool("qemu-system-x86_64", "boot the CD in QEMU")
    argv = qemu_argv(qemu, iso, disk=disk, memory_mb=memory_mb)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    last_stage: str | None = None
    reached = False
    failed = False  # /linuxrc said where it stopped; nothing more will come

    with open(log_path, "w", encoding="utf-8", buffering=1) as log, \
            tempfile.TemporaryFile() as qemu_err:

        def emit(line: str) -> None:
            nonlocal last_stage, reached, failed
            if line.lstrip().startswith(STAGE_PREFIX) and not failed:
                last_stage = line.lstrip()
                failed = last_stage.startswith(FAILED_PREFIX)
            if expect in line:
                reached = True
            tail.append(line)
            log.write(line + "\n")
            if on_line is not None:
                on_line(line)

        console = _Console(emit)
        start = time.monotonic()
        deadline = start + timeout
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=qemu_err,
                                start_new_session=True,
                                preexec_fn=_death_signal())
        try:
            state = "menu"  # -> "booting" (keys sent) -> "os" (a kernel/Xen line seen)
            window = ""  # cleaned text not yet matched against the GRUB prompts
            got_output = False
            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ)
            with sel:
                while not reached and not failed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    if not sel.select(timeout=min(left, 1.0)):
                        continue
                    data = os.read(proc.stdout.fileno(), 65536)
                    if not data:
                        break  # QEMU exited (or closed the console)
                    got_output = True
                    text = console.feed(data)
                    if not reached and expect in console.partial:
                        # Give the rest of the line a moment; a prompt may never end it.
                        deadline = min(deadline, time.monotonic() + LINE_GRACE)
                    if reached or state == "os":
                        continue
                    window = (window + text)[-8192:]
                    state, window = _grub_step(state, window, proc, entry, titles, iso)
                    if state == "failed":
                        break
                    if state == "booting" and any(OS_LINE_RE.match(t) for t in tail):
                        state = "os"
            console.flush()
            seconds = time.monotonic() - start
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            for f in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    f.close()
        if not reached:
            qemu_err.seek(0)
            errors = qemu_err.read(65536).decode("utf-8", "replace").splitlines()
            errors = [e for e in errors if e.strip() and "terminating on signal" not in e]
            if not got_output and proc.returncode not in (0, -signal.SIGKILL) and errors:
                raise BuildError(f"{argv[0]} failed (exit code {proc.returncode}): {errors[-1]}")
            for e in errors:
                emit(f"qemu: {e}")
            if not got_output:
                emit(f"xendemo: no output on the serial console in {seconds:.0f} s "
                     "(the boot loader did not start)")
    return BootResult(reached=reached, seconds=seconds, last_stage=last_stage,
                      log_path=log_path, tail=list(tail))


def _grub_step(state: str, window: str, proc: subprocess.Popen, entry: int, titles: list[str],
               iso: Path) -> tuple[str, str]:
    """Advance the GRUB dialogue; returns (state, unmatched window)."""
    title = titles[entry]
    if state == "menu":
        m = BOOTING_RE.search(window)
        if m:  # booted without showing a menu (timeout 0)
            if m.group(1).strip() != title:
                raise BuildError(f"{iso}: GRUB booted '{m.group(1).strip()}' without showing its menu; "
                                 f"cannot select entry {entry} '{title}'")
            return "booting", window[m.end():]
        i = window.find(HIDDEN_PROMPT)
        if i != -1:
            _keys(proc, ["\x1b"])
            return "menu", window[i + len(HIDDEN_PROMPT):]
        i = window.find(MENU_PROMPT)
        if i != -1:
            time.sleep(MENU_SETTLE)
            _keys(proc, ["^"] * (len(titles) - 1) + ["v"] * entry + ["\r"])
            return "booting", window[i + len(MENU_PROMPT):]
        return state, window
    if state == "booting":
        m = BOOTING_RE.search(window)
        if m and m.group(1).strip() != title:
            raise BuildError(f"{iso}: GRUB booted '{m.group(1).strip()}' instead of entry {entry} '{title}'")
        if GRUB_FAILED in window:
            return "failed", ""
        if m:
            window = window[m.start():]  # keep it so a later GRUB error is still seen
    return state, window[-4096:]


def _keys(proc: subprocess.Popen, keys: list[str]) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        for k in keys:
            proc.stdin.write(k.encode())
            proc.stdin.flush()
            time.sleep(KEY_GAP)


__all__ = ["READY", "STAGE_PREFIX", "BootResult", "boot_iso", "check_entry", "menu_titles",
           "check_disk_bootable", "qemu_argv"]
