"""``medgan``: the command line face, for batch and cluster work and for Slicer's background runs.

Exit codes: 0 finished; 2 a user error, in one line (``--debug`` shows the traceback);
3 stopped on request (Ctrl-C, SIGTERM) after writing the checkpoint; 130 aborted (a second
Ctrl-C, or Ctrl-C outside training), with one line. This face calls the core's api only.
``train --events jsonl`` prints one JSON object per event on stdout and nothing else
there; otherwise a progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

from . import __version__

EXIT_USER_ERROR = 2
EXIT_STOPPED = 3
EXIT_ABORTED = 130
FORMATS = ("nii.gz", "nrrd", "tif")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medgan", description="3D GANs for medical images.")
    parser.add_argument("--version", action="version", version=f"napari-medgan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model on volumes")
    train.add_argument("--task", default=None, help="synthesis (default; see `medgan tasks`)")
    train.add_argument("--data", nargs="+", metavar="PATH", help="volume files or folders")
    train.add_argument(
        "--mask",
        nargs="+",
        metavar="PATH",
        help="one mask per volume: patches centred inside it (inpainting: the holes)",
    )
    train.add_argument("--target", nargs="+", metavar="PATH",
                       help="translation: the paired targets; cycle: the unpaired B set")
    train.add_argument("--labels", nargs="+", metavar="PATH",
                       help="segmentation: label maps; synthesis: draw image + label pairs")
    train.add_argument("--resample-pairs", action="store_true",
                       help="resample targets, labels and masks onto their volume's grid")
    train.add_argument("--patch", type=int, help="cubic patch size (power of two, default 32)")
    train.add_argument("--steps", type=int, help="total training steps (default 200)")
    train.add_argument("--batch", type=int, help="patches per step, over all processes (default 8)")
    train.add_argument(
        "--out", required=True, metavar="CKPT_DIR", help="checkpoint folder to write"
    )
    train.add_argument("--config", metavar="FILE", help="YAML/JSON config; flags override it")
    train.add_argument("--resume", metavar="CKPT_DIR", help="continue from this checkpoint")
    train.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument(
        "--modality",
        choices=("auto", "ct", "mr"),
        help="intensity normalisation: CT HU window or MR percentiles",
    )
    train.add_argument("--target-modality", choices=("auto", "ct", "mr"),
                       help="the same, for the --target volumes")
    train.add_argument("--events", choices=("jsonl",), help="print JSON-lines events on stdout")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    train.add_argument("--nproc", type=int, metavar="N",
                       help="train on N processes of this machine (torchrun; one per GPU); "
                            "--batch is the global batch")

    synth = commands.add_parser("synthesize", help="synthesize new patches from a checkpoint")
    synth.add_argument("checkpoint", metavar="CKPT_DIR")
    synth.add_argument("--n", type=int, default=4, help="how many volumes (default 4)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, metavar="OUT_DIR")
    synth.add_argument("--format", choices=FORMATS, default="nii.gz")
    synth.add_argument("--device", default="auto")
    synth.add_argument("--overwrite", action="store_true", help="replace existing files")

    apply = commands.add_parser("apply", help="run a model over a whole volume")
    apply.add_argument("checkpoint", metavar="CKPT_DIR")
    apply.add_argument("input", metavar="INPUT", help="a volume file or DICOM folder")
    apply.add_argument("--out", required=True, metavar="OUTPUT", help="the file to write")
    apply.add_argument("--mask", metavar="M", help="inpainting: the region to fill")
    apply.add_argument("--overlap", type=float, default=0.5, help="patch overlap, 0 to <1")
    apply.add_argument("--batch", type=int, default=4, help="patches per forward pass")
    apply.add_argument("--reverse", action="store_true", help="cycle: map B back to A")
    apply.add_argument("--device", default="auto")
    apply.add_argument("--overwrite", action="store_true", help="replace an existing output")

    evaluate = commands.add_parser("evaluate", help="quality and privacy numbers of a checkpoint")
    evaluate.add_argument("checkpoint", metavar="CKPT_DIR")
    evaluate.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH",
        help="held-out volumes, not used in training",
    )
    evaluate.add_argument("--target", nargs="+", metavar="PATH", help="their true targets")
    evaluate.add_argument("--labels", nargs="+", metavar="PATH", help="their true label maps")
    evaluate.add_argument("--mask", nargs="+", metavar="PATH",
                          help="inpainting: the holes to fill; anomaly: the true anomalies")
    evaluate.add_argument("--overlap", type=float, default=0.5, help="apply's patch overlap")
    evaluate.add_argument("--n", type=int, default=64, help="patches per set (default 64)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--thorough", action="store_true",
                          help="synthesis: a slower, surer realism test (4x the patches)")
    evaluate.add_argument("--tstr", action="store_true",
                          help="synthesis with labels: train segmenters on synthetic / real "
                               "pairs, Dice on --data with --labels")
    evaluate.add_argument("--tstr-steps", type=int, metavar="STEPS",
                          help="segmenter steps per training set (default 200)")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")

    info = commands.add_parser("info", help="print a checkpoint's card")
    info.add_argument("checkpoint", metavar="CKPT_DIR")
    info.add_argument("--json", action="store_true", help="the whole card as JSON")

    sample = commands.add_parser("sample-data", help="write a built-in real volume")
    sample.add_argument("name", help="mni152_t1, mni152_gm, mni152_wm or ct_head")
    sample.add_argument("--out", required=True, metavar="FILE")
    sample.add_argument("--overwrite", action="store_true")

    commands.add_parser("tasks", help="list the tasks this version can train")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    from .core.errors import MedGANError

    warnings.simplefilter("default")
    warnings.showwarning = _show_warning
    # Ctrl-C and SIGTERM abort with one line, even where the shell started us ignoring
    # SIGINT (a script's background job); train replaces these with its stop handler.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _COMMANDS[args.command](args)
    except MedGANError as err:
        if args.debug:
            raise
        print(f"medgan: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("medgan: aborted; files written before stay, nothing is half-written",
              file=sys.stderr)
        return EXIT_ABORTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from .core import api
    from .core.errors import MedGANWarning

    if issubclass(category, MedGANWarning) and api.is_main_process():
        print(f"medgan: warning: {message}", file=sys.stderr)


def _train_config(args: argparse.Namespace):
    from .core import api

    if args.config:
        config = api.load_config(args.config)
    elif args.resume:
        config = api.Config.from_dict(api.read_card(args.resume)["config"], source=args.resume)
    else:
        config = api.Config()
    overrides = {
        ("task",): args.task,
        ("data", "paths"): args.data,
        ("data", "masks"): args.mask,
        ("data", "targets"): args.target,
        ("data", "labels"): args.labels,
        ("data", "target_modality"): args.target_modality,
        ("data", "resample_pairs"): args.resample_pairs or None,
        ("model", "patch_size"): args.patch,
        ("train", "steps"): args.steps,
        ("train", "batch_size"): args.batch,
        ("train", "device"): args.device,
        ("train", "seed"): args.seed,
        ("data", "modality"): args.modality,
    }
    for keys, value in overrides.items():
        if value is not None:
            target = config if len(keys) == 1 else getattr(config, keys[0])
            setattr(target, keys[-1], value)
    config.validate()
    if not config.data.paths:
        from .core.errors import ConfigError

        raise ConfigError("No training data: give --data PATH [PATH ...] (files or folders).")
    return config


def _cmd_train(args: argparse.Namespace) -> int:
    from .core import api

    config = _train_config(args)
    if args.nproc is not None:
        return _launch(args)
    out = Path(args.out)
    events = api.train(config, out, resume=args.resume, overwrite=args.overwrite,
                       stop=(stop := threading.Event()))
    if args.events == "jsonl":  # the preview file beside the checkpoint follows its rule
        continuing = args.resume and Path(args.resume).resolve() == out.resolve()
        api.check_output(_preview_path(out), kind="volume",
                         overwrite=args.overwrite or continuing,
                         inputs=api.training_inputs(config))
    previous = {
        sig: signal.signal(sig, _stop_handler(stop)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        if not api.is_main_process():  # under torchrun rank 0 alone reports
            last = [event.kind for event in events][-1]
        elif args.events == "jsonl":
            last = _print_events(events, out)
        else:
            last = _progress_bar(events)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_STOPPED if last == "stopped" else 0


def _launch(args: argparse.Namespace) -> int:
    """``train --nproc N``: the same command on N processes through torchrun's launcher,
    its outcome mapped onto this command's exit codes."""
    from .core import api
    from .core.errors import ConfigError

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}.")
    code = api.launch_training(args.nproc, _without_nproc(args.argv))
    if code is None:  # the launcher was stopped: it passed the signal on, rank 0 saved
        print("medgan: stopped; the processes wrote their checkpoint", file=sys.stderr)
        return EXIT_STOPPED
    if code not in (0, EXIT_USER_ERROR, EXIT_STOPPED, EXIT_ABORTED):  # those said why
        how = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
        print(f"medgan: error: a training process {how}; the launcher stopped the others",
              file=sys.stderr)
        return 1
    return code


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc N`` (given as two words or as ``--nproc=N``)."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            kept.append(word)
    return kept


def _stop_handler(stop: threading.Event):
    """First Ctrl-C / SIGTERM: stop at the next step with a checkpoint; a second Ctrl-C:
    abort. A repeated SIGTERM changes nothing: schedulers send it to every process of a
    job, and under torchrun the launcher passes its own on as well."""

    def handle(signum, frame):
        if stop.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        stop.set()
        print(
            "\nmedgan: stopping after this step (checkpoint follows); Ctrl-C again to abort",
            file=sys.stderr,
        )

    return handle


def _preview_path(out: Path) -> Path:
    return out.with_name(f"{out.name}-preview.nii.gz")


def _print_events(events, out: Path) -> str:
    """Print each event as one JSON line; return the last event's kind."""
    from .core import api

    kind = ""
    for event in events:
        record = event.to_json()
        if event.preview is not None:
            record["preview"] = str(api.write_volume(event.preview, _preview_path(out),
                                                     overwrite=True))
        print(json.dumps(record), flush=True)
        kind = event.kind
    return kind


def _progress_bar(events) -> str:
    """Show a progress bar on stderr; return the last event's kind."""
    from tqdm import tqdm

    bar, kind = None, ""
    for event in events:
        kind = event.kind
        if event.kind == "start":
            bar = tqdm(
                total=event.total,
                initial=event.step,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        elif event.kind == "step":
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in event.losses.items()}, refresh=False)
        else:
            bar.close()
            print(f"medgan: {event.message}; checkpoint: {event.checkpoint}", file=sys.stderr)
    return kind


def _cmd_synthesize(args: argparse.Namespace) -> int:
    """Each patch as ``synth_NNN``; a model trained with labels adds ``synth_NNN_labels``."""
    from .core import api

    out = Path(args.out)
    card = api.read_card(args.checkpoint)
    patch, pairs = int(card["patch_size"]), bool(card.get("generates_labels"))
    api.check_output(out, kind="folder", inputs=[args.checkpoint],
                     expected_bytes=args.n * (5 if pairs else 4) * patch**3)
    names = [f"synth_{i:03d}" for i in range(args.n)]
    targets = [[out / f"{name}.{args.format}"] for name in names]
    if pairs:
        for name, files in zip(names, targets, strict=True):
            files.append(out / f"{name}_labels.{args.format}")
    for target in (path for files in targets for path in files):
        api.check_output(target, kind="volume", overwrite=args.overwrite)
    model = api.load_model(args.checkpoint, device=args.device, expect_task=None)
    made = api.synthesize_pairs(model, args.n, args.seed) if pairs else \
        [(volume,) for volume in api.synthesize(model, args.n, args.seed)]
    for volumes, files in zip(made, targets, strict=True):
        for volume, target in zip(volumes, files, strict=True):
            api.write_volume(volume, target, overwrite=args.overwrite)
            print(target)
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core import api

    out = api.check_output(args.out, kind="volume", overwrite=args.overwrite,
                           inputs=[args.checkpoint, args.input, args.mask],
                           expected_bytes=api.size_on_disk(args.input))
    model = api.load_model(args.checkpoint, device=args.device)
    bars = []  # opened at the first patch, so an error found before is the only line

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="patch", file=sys.stderr, dynamic_ncols=True))
        bars[0].update(done - bars[0].n)

    try:
        result = api.apply(model, args.input, mask=args.mask, overlap=args.overlap,
                           batch_size=args.batch, progress=progress, reverse=args.reverse)
    finally:
        for bar in bars:
            bar.close()
    print(api.write_volume(result, out, overwrite=args.overwrite))
    return 0


REALISM_HOW_TO_READ = (
    "Realism (c2st_auc_*): ROC AUC of a classifier trained to tell synthetic from real "
    "patches, 0.5 = indistinguishable, 1 = always told apart; compare with "
    "c2st_auc_real_vs_real, what two real sets score.")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .core import api

    report = api.evaluate(args.checkpoint, args.data, target=args.target, labels=args.labels,
                          mask=args.mask, n=args.n, seed=args.seed, overlap=args.overlap,
                          thorough=args.thorough, tstr=args.tstr,
                          **({"tstr_steps": args.tstr_steps} if args.tstr_steps else {}))
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        realism = {k: v for k, v in report.items() if k.startswith("c2st_")}
        for key, value in realism.items():  # realism first, then how to read it
            print(f"{key:<40} {_fmt(value)}")
        if realism:
            print(REALISM_HOW_TO_READ)
        for key, value in report.items():
            if key in realism:
                continue
            if isinstance(value, dict):
                for sub, number in value.items():
                    print(f"{key}.{sub:<32} {_fmt(number)}")
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for item in value:  # one line per evaluated volume
                    print("  ".join(f"{k}={_fmt(v)}" for k, v in item.items()))
            else:
                print(f"{key:<40} {_fmt(value)}")
    return 0


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _cmd_info(args: argparse.Namespace) -> int:
    from .core import api

    card = api.read_card(args.checkpoint)
    if args.json:
        print(json.dumps(card, indent=2))
        return 0
    data = card.get("data", {})
    lines = {
        "task": card["task"],
        "version": card.get("version"),
        "created": card.get("created"),
        "step": f"{card['step']} of {card['config']['train']['steps']}",
        "patch size": card.get("patch_size"),
        "spacing (mm)": card.get("spacing"),
        "modality": card.get("modality"),
        "normalization": card.get("normalizations"),
        "nets": {
            k: f"{v['class']} ({v['parameters']:,} parameters)"
            for k, v in card.get("nets", {}).items()
        },
        "training files": data.get("files"),
        "seed": card.get("seed"),
        "last losses": {k: v[-1] for k, v in card.get("loss_history", {}).items() if v},
    }
    if card.get("generates_labels"):  # image + label pairs: which label value is which class
        lines["draws labels"] = ", ".join(
            f"{name} = {value}" for name, value in zip(card["class_names"],
                                                       card["label_values"], strict=True))
    for key, value in lines.items():
        print(f"{key:<15} {value}")
    return 0


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from .core import api

    print(api.write_sample(args.name, args.out, overwrite=args.overwrite))
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from .core import api

    print("\n".join(api.available_tasks()))
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "synthesize": _cmd_synthesize,
    "apply": _cmd_apply,
    "evaluate": _cmd_evaluate,
    "info": _cmd_info,
    "sample-data": _cmd_sample_data,
    "tasks": _cmd_tasks,
}

if __name__ == "__main__":
    from .core import api

    api.exit_process(main())
