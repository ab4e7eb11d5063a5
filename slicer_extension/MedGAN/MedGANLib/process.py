"""Following a ``medgan train --events jsonl`` process: progress, cancel, and what went wrong.

Training runs as its own process, so Slicer stays responsive and a crash of the
run can't take Slicer down. A *runner* starts the process and hands each output
line, then the exit code, to callbacks on the caller's (main) thread:

- in Slicer ≥ 5.12, ``slicer.util.launchConsoleProcess(blocking=False, …)``, whose
  QTimer delivers them (see ``MedGAN.py``);
- everywhere else, :class:`QueueRunner`: a reader thread puts them on a queue and
  whoever owns the main loop calls :meth:`QueueRunner.poll` (a ``qt.QTimer`` in
  older Slicer, a loop in tests).

:class:`TrainingRun` reads the JSON events (step, total, steps/s, ETA, losses,
preview file, checkpoint), keeps the last other lines for error reports, and
cancels by terminating the whole process tree: ``PythonSlicer`` is a launcher, so
signalling only the process it started would leave the real Python running.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import psutil

EXIT_USER_ERROR = 2  # medgan's exit codes (napari_medgan.cli)
EXIT_STOPPED = 3
EXIT_ABORTED = 130
CANCEL_GRACE_S = 60.0  # time a cancelled run gets to write its checkpoint before it is killed
TAIL_LINES = 20


class Runner(Protocol):
    """Starts ``args`` and calls ``on_line(line)`` per output line, then ``on_exit(code)``,
    both on the caller's main thread."""

    def __call__(self, args: Sequence[str], on_line: Callable[[str], None],
                 on_exit: Callable[[int], None]) -> subprocess.Popen: ...


class QueueRunner:
    """A :class:`Runner` without Qt: ``subprocess.Popen``, a reader thread and a queue.

    Nothing is delivered until :meth:`poll` is called, so callbacks run on the
    thread that polls, as MRML needs.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()

    def __call__(self, args, on_line, on_exit) -> subprocess.Popen:
        process = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, errors="replace")

        def read() -> None:
            for line in process.stdout:
                self._queue.put((on_line, line.rstrip("\n")))
            self._queue.put((on_exit, process.wait()))

        threading.Thread(target=read, daemon=True, name="medgan-train-reader").start()
        return process

    def poll(self) -> None:
        """Deliver every line and exit code that has arrived."""
        while True:
            try:
                callback, value = self._queue.get_nowait()
            except queue.Empty:
                return
            callback(value)


@dataclass
class TrainingProgress:
    """Where a run stands. ``status``: running, stopping, done, stopped or failed."""

    status: str = "running"
    step: int = 0
    total: int = 0
    steps_per_s: float = 0.0
    eta_s: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)
    preview: str | None = None  # file of the latest preview volume
    checkpoint: str | None = None  # the latest checkpoint written
    message: str = ""
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "stopped", "failed")


class TrainingRun:
    """One ``medgan train --events jsonl`` process, followed through its events.

    ``on_update(progress, event)`` is called on the main thread for every event
    (``event`` is the parsed JSON record) and once at the end (``event`` None).
    """

    def __init__(self, args: Sequence[str], runner: Runner,
                 on_update: Callable[[TrainingProgress, dict | None], None] | None = None
                 ) -> None:
        self.args = list(args)
        self.progress = TrainingProgress()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)  # the last lines that were not events
        self._on_update = on_update
        self._last_event = ""
        self.preview_node = None  # the node showing the previews, kept by the logic
        self.process = runner(self.args, self._line, self._exit)

    def _line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            if line.strip():
                self.tail.append(line)
            return
        progress = self.progress
        self._last_event = event["event"]
        progress.step, progress.total = int(event["step"]), int(event["total"])
        if event["event"] == "step":  # start / done / stopped carry no rate or losses
            progress.steps_per_s = float(event["steps_per_s"])
            progress.eta_s = float(event["eta_s"])
            progress.losses = dict(event["losses"])
        if isinstance(event.get("preview"), str):
            progress.preview = event["preview"]
        if event.get("checkpoint"):
            progress.checkpoint = event["checkpoint"]
        if event.get("message"):
            progress.message = event["message"]
        self._notify(event)

    def _exit(self, code: int) -> None:
        progress = self.progress
        progress.exit_code = code
        cancelled = progress.status == "stopping"
        if self._last_event == "done" and code == 0:
            progress.status = "done"
            progress.message = f"Finished {progress.step} steps; checkpoint: {progress.checkpoint}"
        elif self._last_event == "stopped" or (cancelled and code == EXIT_STOPPED):
            progress.status = "stopped"
            progress.message = (f"Stopped at step {progress.step}; the checkpoint "
                                f"{progress.checkpoint} is kept (resume it to go on).")
        elif cancelled:
            progress.status = "stopped"
            kept = (f"the last checkpoint, {progress.checkpoint}, is kept" if progress.checkpoint
                    else "no checkpoint had been written yet")
            progress.message = (f"Cancelled at step {progress.step} before a checkpoint could "
                                f"be written; {kept}.")
        else:
            progress.status = "failed"
            progress.message = self._failure(code)
        self._notify(None)

    def _failure(self, code: int) -> str:
        errors = [line for line in self.tail if line.startswith("medgan: error:")]
        if code == EXIT_USER_ERROR and errors:
            return errors[-1].removeprefix("medgan: error: ")
        if code < 0:
            how = f"was killed by signal {signal.Signals(-code).name}"
        elif code == EXIT_ABORTED:
            how = "was aborted"
        else:
            how = f"ended with exit code {code}"
        kept = (f" The last checkpoint, {self.progress.checkpoint}, is kept."
                if self.progress.checkpoint else "")
        last = "\n".join(self.tail) or "(it printed nothing)"
        return (f"The training process {how} at step {self.progress.step}.{kept} "
                f"Its last lines:\n{last}")

    def _notify(self, event: dict | None) -> None:
        if self._on_update:
            self._on_update(self.progress, event)

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Ask the run to stop: SIGTERM to its whole process tree, which makes ``medgan``
        write a checkpoint and exit; whatever still runs after ``grace_s`` is killed."""
        if self.progress.finished or self.progress.status == "stopping":
            return
        self.progress.status = "stopping"
        terminate_tree(self.process.pid, grace_s)


def terminate_tree(pid: int, grace_s: float) -> None:
    """SIGTERM ``pid`` and all its descendants now; SIGKILL the survivors after ``grace_s``
    (from a thread, so the caller's event loop goes on)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass

    def running() -> list[psutil.Process]:
        # polled, not waited on: waiting would reap the child before its Popen sees the code
        alive = []
        for process in processes:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        return alive

    def kill_survivors() -> None:
        deadline = time.monotonic() + grace_s
        while running() and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in running():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass

    threading.Thread(target=kill_survivors, daemon=True, name="medgan-train-killer").start()
