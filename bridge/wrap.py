"""``tokenbridge wrap``, ``parse`` and ``capture``: usage printed in a terminal, recorded.

``wrap -- CMD ...`` runs CMD in a pseudo-terminal. Its output is passed through unchanged (the
bytes CMD writes are the bytes written out; colours, cursor moves, window resizes and Ctrl-C
keep working; the exit code is CMD's) while the visible text of each line goes through the
patterns of ``bridge.terminal``. A line's records are committed as soon as it is printed, so
a killed session keeps what it showed. Each run is its own session (``--session`` names it).

``capture`` reads a tmux pane's scrollback (``--pane``) or a file (``--file``, ``-`` = stdin)
through the same tracker; running it again over the same text adds nothing.

``parse LINE`` prints what a line would record and records nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge import terminal
from bridge.errors import SourceError, TokenbridgeError
from bridge.project import project_for

log = logging.getLogger("tokenbridge")


def run_in_pty(argv: list[str], on_output: Callable[[bytes], None]) -> int:
    """Run ``argv`` in a pseudo-terminal, copying its output to stdout byte for byte and our
    stdin to it; returns its exit code (128 + N after signal N, as a shell reports it)."""
    import fcntl
    import pty
    import select
    import termios
    import tty

    try:
        stdin_fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # no stdin at all (e.g. closed by cron)
        stdin_fd = os.open(os.devnull, os.O_RDONLY)
    stdout_fd = sys.stdout.fileno()
    interactive = os.isatty(stdin_fd)
    attrs = termios.tcgetattr(stdin_fd) if interactive else None
    winsize = fcntl.ioctl(stdin_fd, termios.TIOCGWINSZ, b"\0" * 8) if interactive else None
    pid, master = pty.fork()
    if pid == 0:  # the child: its terminal behaves like ours, or passes bytes as written
        try:
            if attrs is not None and winsize is not None:
                termios.tcsetattr(0, termios.TCSANOW, attrs)
                fcntl.ioctl(0, termios.TIOCSWINSZ, winsize)
            else:
                mode = termios.tcgetattr(0)
                mode[1] &= ~termios.OPOST  # no \n → \r\n: output bytes stay the command's own
                mode[3] &= ~(termios.ECHO | termios.ECHONL)
                termios.tcsetattr(0, termios.TCSANOW, mode)
            os.execvp(argv[0], argv)  # noqa: S606 - the user's own command, as typed
        except OSError as exc:
            os.write(2, f"tokenbridge: error: cannot run {argv[0]}: {exc.strerror or exc}\n".encode())
        os._exit(127)

    def resize(_sig: int, _frame: Any) -> None:
        size = fcntl.ioctl(stdin_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)  # the kernel signals the child's foreground

    def forward(sig: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    old_handlers = {}
    if interactive:
        old_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)
        tty.setraw(stdin_fd)  # keys (Ctrl-C too) reach the child's terminal as typed
    else:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old_handlers[sig] = signal.signal(sig, forward)
    out_ok = True
    readers = [master, stdin_fd]
    status: int | None = None
    try:
        while True:
            ready, _, _ = select.select(readers, [], [], 0.25)
            if not ready and status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    # The command exited but something it started still holds the terminal:
                    # what is already written was read above; do not wait for the straggler.
                    status = st
                    if not select.select([master], [], [], 0.1)[0]:
                        break
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its terminal
                    data = b""
                if not data:
                    break
                if out_ok:
                    try:
                        _write_all(stdout_fd, data)
                    except BrokenPipeError:
                        out_ok = False
                on_output(data)
            if stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if data:
                    _write_all(master, data)
                else:
                    readers.remove(stdin_fd)
                    if not interactive:
                        _write_all(master, b"\x04")  # our input ended: so does the child's
    finally:
        if attrs is not None:
            termios.tcsetattr(stdin_fd, termios.TCSAFLUSH, attrs)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        os.close(master)
    if status is None:
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Recorder:
    """Feeds output to a tracker and commits what it yields; a ledger problem never stops
    the wrapped command (it is reported once, after it exits)."""

    def __init__(self, settings: Any, tracker: terminal.Tracker) -> None:
        self.settings, self.tracker = settings, tracker
        self.lines = terminal.LineSplitter()
        self.recorded = 0
        self.error: str | None = None

    def output(self, data: bytes) -> None:
        for line in self.lines.feed(data):
            self._commit(self.tracker.feed(line))

    def finish(self) -> None:
        for line in self.lines.finish():
            self._commit(self.tracker.feed(line))
        self._commit(self.tracker.finish())

    def _commit(self, records: list[Any]) -> None:
        if not records or self.error is not None:
            return
        try:
            terminal.commit(self.settings, records)
            self.recorded += len(records)
        except (TokenbridgeError, OSError) as exc:
            self.error = str(exc)


def cmd_wrap(settings: Any, args: Any) -> int:
    argv = list(args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)  # a later "--" is the command's
    if not argv:
        raise SourceError("wrap", "no command given (usage: tokenbridge wrap -- COMMAND [ARGS...])")
    patterns, notes = terminal.patterns_for(settings, keep_covered=args.all_patterns)
    for note in notes:
        log.debug("%s", note)
    session = args.session or f"wrap:{uuid.uuid4()}"
    tracker = terminal.Tracker(session, project_for(args.project, env=settings.env), patterns)
    rec = _Recorder(settings, tracker)
    code = run_in_pty(argv, rec.output)
    rec.finish()
    if rec.error is not None:
        print(f"tokenbridge: warning: usage seen in the output was not recorded: {rec.error}", file=sys.stderr)
    return code


def cmd_parse(settings: Any, args: Any) -> int:
    patterns = terminal.load_patterns(settings.terminal_patterns)
    m = terminal.match_line(args.line, patterns)
    if m is None:
        print(json.dumps({"match": None}))
        return 1
    print(json.dumps({"match": m.as_json(), "recorded": False}, indent=2))
    return 0


def cmd_capture(settings: Any, args: Any) -> int:
    if args.pane is not None:
        text = _tmux_scrollback(args.pane)
        session = args.session or f"tmux:{args.pane}"
    elif args.file == "-":
        text, session = sys.stdin.read(), args.session or "stdin"
    elif args.file:
        try:
            text = Path(args.file).read_text(errors="replace")
        except OSError as exc:
            raise SourceError("capture", f"cannot read {args.file}: {exc.strerror or exc}") from None
        session = args.session or f"file:{Path(args.file).resolve()}"
    else:
        raise SourceError("capture", "give --pane PANE (tmux) or --file PATH ('-' for stdin)")
    patterns, _notes = terminal.patterns_for(settings, keep_covered=args.all_patterns)
    tracker = terminal.Tracker(session, project_for(args.project, env=settings.env), patterns)
    records = [r for line in text.splitlines() for r in tracker.feed(line)] + tracker.finish()
    result = terminal.commit(settings, records)
    print(
        f"{len(records)} usage line(s) matched: {result.new_requests} new, {result.updated_requests} grew",
        file=sys.stderr,
    )
    return 0


def _tmux_scrollback(pane: str) -> str:
    try:
        done = subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", pane], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise SourceError("capture", "tmux is not installed") from None
    if done.returncode != 0:
        raise SourceError("capture", f"tmux capture-pane -t {pane}: {done.stderr.strip() or 'failed'}")
    return done.stdout
