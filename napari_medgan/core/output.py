"""The output place: one check every output goes through before any work starts.

Every face (``medgan``, the napari widgets, the Slicer module) hands the core a place
to write that a user typed or picked by hand. :func:`check_output` refuses, up front and
in one sentence, a place that would destroy what the user had or that can't take the
result, so a long run is never lost at the end:

- ``overwrite`` replaces only what we wrote: a medgan checkpoint folder (our
  ``card.json`` and weights, nothing else) or a file of the same kind; never another
  folder, never an input, never the working folder or a folder above it. An empty
  folder may take a checkpoint unasked; any other folder is refused as a checkpoint
  place whether or not ``overwrite`` is given, so the user is never told to add a flag
  that would then be refused.
- A volume is never written into a folder holding a DICOM series.
- A write probe in the folder that will hold the output, and its free space against
  the expected size, catch a read-only folder or a full disk before training.

>>> check_output("ckpt", kind="checkpoint", inputs=["scans"])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from .errors import CheckpointError, MedGANError, OutputError, OutputExistsError

#: ``checkpoint``: a folder ``medgan train`` writes; ``volume``: one volume file (a suffix
#: we write); ``file``: any other single file (a config); ``folder``: a folder that
#: receives new files (``synthesize``), each checked as a volume.
OutputKind = Literal["checkpoint", "volume", "file", "folder"]
PROBE_BYTES = 4096


def check_output(
    path: str | Path,
    *,
    kind: OutputKind,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    expected_bytes: int = 0,
) -> Path:
    """Refuse an output place that can't or mustn't be written; return it as a Path.

    ``inputs``: the files and folders the work reads (they are never replaced, and a
    volume is never written inside one). ``expected_bytes``: about how much will be
    written, checked against the free space.
    """
    from .data.io import WRITE_SUFFIXES, suffix_of, unsupported_suffix  # io writes through here

    path = Path(path)
    if kind == "volume" and suffix_of(path) not in WRITE_SUFFIXES:
        raise unsupported_suffix(path, writing=True)
    place = path.resolve()
    if kind == "checkpoint" and Path.cwd().resolve().is_relative_to(place):
        raise OutputError(
            f"{path} is the working folder or holds it; a checkpoint needs a folder of its "
            "own: give --out a new name."
        )
    _refuse_inputs(path, place, kind, inputs)
    _refuse_series_folder(path if kind == "folder" else path.parent, kind)
    if (path.exists() or path.is_symlink()) and not _empty_folder(path, kind):
        if kind == "folder":
            if not path.is_dir():
                raise OutputError(f"{path} is a file; give --out a folder for the results.")
        elif kind == "checkpoint":
            _require_checkpoint(path)  # anything else is refused, asked to overwrite or not
            if not overwrite:
                raise OutputExistsError(
                    f"{path} already exists; choose another output, add --overwrite to "
                    f"replace it, or continue it with --resume {path}."
                )
        elif not overwrite:
            raise OutputExistsError(
                f"{path} already exists; choose another output or add --overwrite to replace "
                "it."
            )
        elif not path.is_file():
            raise OutputError(
                f"{path} is a folder, not a file; --overwrite replaces only a file of the same "
                "kind. Choose another output."
            )
    probe(path if kind == "folder" else path.parent, expected_bytes, path)
    return path


def _empty_folder(path: Path, kind: OutputKind) -> bool:
    """An empty folder (``mkdir runs/ct`` first) holds nothing to lose: a checkpoint may go
    there without --overwrite."""
    return (kind == "checkpoint" and path.is_dir() and not path.is_symlink()
            and not any(path.iterdir()))


def _refuse_inputs(path: Path, place: Path, kind: OutputKind,
                   inputs: Iterable[str | Path | None]) -> None:
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if source == place:
            raise OutputError(f"{path} is one of the inputs; write the output somewhere else.")
        if kind == "checkpoint" and source.is_relative_to(place):  # replaced as a whole
            raise OutputError(
                f"{path} holds the input {given}; it is never replaced: give --out a new name."
            )
        if kind != "checkpoint" and source.is_dir() and place.is_relative_to(source):
            raise OutputError(
                f"{path} is inside the input folder {given}; write the output outside it."
            )


def _refuse_series_folder(folder: Path, kind: OutputKind) -> None:
    """A volume written into a DICOM series folder would make it a folder of mixed kinds,
    which is refused when read: the user's series would no longer open."""
    from .data.series import dicom_files  # series reads through io, which writes through here

    if kind in ("volume", "folder") and folder.is_dir() and dicom_files(folder):
        raise OutputError(
            f"{folder} holds a DICOM series; a volume written there would leave the series "
            "unreadable (a folder of mixed kinds). Write the output in another folder."
        )


def _require_checkpoint(path: Path) -> None:
    """--overwrite may replace a checkpoint folder, and only one holding nothing else."""
    from .checkpoint import CHECKPOINT_FILES, read_card  # checkpoint saves through here

    if not path.is_dir():
        raise OutputError(
            f"{path} is a file, not a medgan checkpoint folder; --overwrite replaces only a "
            "checkpoint. Choose another --out."
        )
    try:
        read_card(path)
    except CheckpointError as err:
        raise OutputError(
            f"{path} is not a medgan checkpoint (no card.json of ours), so --overwrite won't "
            "replace it; choose another --out."
        ) from err
    others = sorted(p.name for p in path.iterdir() if p.name not in CHECKPOINT_FILES)
    if others:
        raise OutputError(
            f"{path} holds {others[0]}" + (f" and {len(others) - 1} more" if others[1:] else "")
            + ", which is not part of a checkpoint; --overwrite won't delete it. Move it "
            "away or choose another --out."
        )


def probe(folder: Path, expected_bytes: int = 0, output: Path | None = None) -> None:
    """Write a small file in ``folder`` (or the nearest folder above it that exists) and
    check its free space against ``expected_bytes``; refuse with the reason if either fails.
    """
    output = output or folder
    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"{base} is a file, so {output} can't be written there; "
                          "choose another output.")
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".medgan-probe-") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise OutputError(
            f"Can't write in {base} ({err.strerror or err}), so {output} can't be written; "
            "choose a place you can write to."
        ) from err
    free = shutil.disk_usage(base).free
    if free < expected_bytes:
        raise OutputError(
            f"{base} has {_size(free)} free but {output} needs about {_size(expected_bytes)}; "
            "free some space or choose another place."
        )


def size_on_disk(path: str | Path) -> int:
    """Bytes a file, or the files of a folder (a DICOM series), take: about what an
    output on the same grid will take."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.is_file() else 0


def _size(count: float) -> str:
    units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
    while count >= 1024 and len(units) > 1:
        count /= 1024
        units.pop(0)
    return f"{count:.0f} bytes" if units[0] == "bytes" else f"{count:.1f} {units[0]}"


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Put a file at ``path`` complete or not at all.

    ``write(temporary)`` fills a temporary file beside ``path`` (its name ends with
    ``path``'s name, so writers that pick the format from the suffix still can) and
    raises if what it wrote is not whole; only then is it renamed over ``path``. A
    failure leaves the previous file as it was, and the error says so.
    """
    kept = "the previous file is intact" if path.exists() else "nothing was written"
    temporary = path.parent / f".{uuid.uuid4().hex[:8]}.tmp-{path.name}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except MedGANError:
        raise
    except OSError as err:
        raise OutputError(f"Could not write {path} ({err.strerror or err}); {kept}.") from err
    except Exception as err:  # every writer fails differently (RuntimeError, ImageFileError...)
        raise OutputError(f"Could not write {path} ({err}); {kept}.") from err
    finally:
        discard(temporary)
    return path


def discard(path: Path) -> None:
    """Remove a temporary file or folder of ours; a failure here never hides the real error."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
