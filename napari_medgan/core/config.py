"""Typed training configuration, read from and written to YAML / JSON.

The checkpoint card embeds ``Config.to_dict()``, so a run can always be repeated
from its checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .output import check_output, write_atomically
from .schema import Range, SchemaViolation, conform

Modality = Literal["auto", "ct", "mr"]
Loss = Literal["auto", "nonsaturating", "hinge", "lsgan", "wgan-gp"]
# what "auto" means per task: each task's published recipe
TASK_LOSSES = {"anomaly": "wgan-gp", "cycle": "lsgan"}
# the DiffAugment transforms of core/augment.py (data-efficient training, #10)
Augmentation = Literal["intensity", "flip", "translation", "cutout"]
# the tasks whose nets are the DCGAN pair, where those switches act
DCGAN_TASKS = ("synthesis", "anomaly")
# train.r1_weight when not set: what bench/bench_quality.py measured to pay (bench/README.md)
TASK_R1_WEIGHTS = {"synthesis": 1.0}
# model.local_d_channels when not set: with linear upsampling, the switch measured to make
# synthetic patches harder to tell from real ones (bench/README.md)
TASK_LOCAL_D_CHANNELS = {"synthesis": 16}
# train.lr_d when not set: every task's published rate (DCGAN, pix2pix, CycleGAN), but
# synthesis's critics at twice G's rate, measured to pay (bench/README.md)
DEFAULT_LR_D = 2e-4
TASK_LR_D = {"synthesis": 4e-4}


@dataclass
class DataConfig:
    """Which volumes to learn from and how to turn them into patches."""

    paths: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)  # sampling region, or holes (inpainting)
    targets: list[str] = field(default_factory=list)  # paired (translation) or a set (cycle)
    labels: list[str] = field(default_factory=list)  # label maps (segmentation)
    # share of patches centred on labelled voxels, the rest anywhere; not with masks,
    # which place every patch
    label_share: float = 0.5
    resample_pairs: bool = False  # bring partners on another grid onto their volume's grid
    # "ct" (HU window), "mr" (percentiles) or "auto" (guess per data set)
    modality: Modality = "auto"
    target_modality: Modality = "auto"  # the same, for the targets
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    # "resample" onto the first volume's spacing, or "refuse"
    spacing_mismatch: Literal["resample", "refuse"] = "resample"
    # DICOM series with missing slices: "refuse" or "resample"
    irregular_series: Literal["refuse", "resample"] = "refuse"
    # "device": volumes on the training device; "queue": torchio Queue
    sampler: Literal["device", "queue"] = "device"
    samples_per_volume: int = 16  # queue sampler only
    queue_length: int = 256  # queue sampler only


@dataclass
class ModelConfig:
    """Sizes of the nets; everything needed to rebuild them from a card."""

    patch_size: int = 32
    # the DCGAN nets (synthesis, anomaly): the small DCGAN-3D of `make demo`, since
    # 2026-12-05 (widths 32, latent 128 before: 469 steps in the demo's CPU budget, every
    # patch told apart; bench/README.md)
    latent_dim: int = 64
    g_channels: int = 8  # generator width at full resolution; doubles per level down
    d_channels: int = 16  # discriminator width at full resolution; doubles per level down
    max_channels: int = 128
    # "transpose" convolution, or interpolate + conv against checkerboard artefacts:
    # nearest ("resize") or linear ("trilinear": no voxel blocks either)
    upsample: Literal["transpose", "resize", "trilinear"] = "trilinear"
    spectral_norm: bool = False  # spectral normalisation in the discriminator
    unet_channels: tuple[int, ...] = (16, 32, 64, 128)  # U-Net widths per level, finest first
    patchgan_channels: int = 32  # PatchGAN width of its first layer
    # discriminator normalisation: "batch", "none"; auto: none for wgan-gp
    d_norm: Literal["auto", "batch", "none"] = "auto"
    # data-efficient training (#10)
    g_residual: bool = False  # synthesis / anomaly: residual blocks in G at coarse levels
    d_residual: bool = False  # synthesis / anomaly: residual blocks in D at coarse levels
    # synthesis / anomaly: width of a second critic beside D, a PatchGAN (one logit per
    # neighbourhood); 0: none; None: the task's own (TASK_LOCAL_D_CHANNELS). Measured to
    # pay with upsample: trilinear (bench/README.md)
    local_d_channels: int | None = None
    # its stride-2 levels, which set the neighbourhood a logit sees: 1 → 16³, 2 → 34³,
    # 3 → 70³ voxels (nets/patchgan.py, with the smallest patch each takes)
    local_d_layers: int = 2
    # large volumes (#11)
    # recompute each U-Net / DCGAN level's activations in the backward pass instead of
    # keeping them: less memory per step (bench/README.md), about a third more compute
    activation_checkpointing: bool = False


@dataclass
class TrainConfig:
    """The optimisation: steps, losses, device and bookkeeping."""

    steps: int = 200
    batch_size: int = 8  # the global batch: split over the processes of a distributed run
    lr_g: float = 2e-4
    lr_d: float | None = None  # None: the task's own (TASK_LR_D, else DEFAULT_LR_D)
    betas: tuple[float, float] = (0.5, 0.999)
    loss: Loss = "auto"  # "auto": wgan-gp for anomaly, lsgan for cycle, else nonsaturating
    n_critic: int = 0  # discriminator steps per generator step; 0: 5 for wgan-gp, else 1
    gp_weight: float = 10.0
    adversarial_weight: float = 1.0  # conditional tasks: weight of the adversarial term
    l1_weight: float = 100.0  # translation, inpainting: weight of the L1 term (pix2pix: 100)
    cycle_weight: float = 10.0  # cycle: cycle-consistency weight
    identity_weight: float = 5.0  # cycle: identity weight
    encoder_fraction: float = 0.4  # anomaly: share of the steps spent training the encoder
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    amp: bool = True  # bfloat16 autocast where the device computes it natively (speed.py)
    # channels_last_3d memory layout: "auto" (= on), "on", "off"
    channels_last: Literal["auto", "on", "off"] = "auto"
    preview_every: int = 50
    checkpoint_every: int = 100
    # data-efficient training (#10)
    # DiffAugment of D's inputs, real and fake: any of intensity, flip, translation, cutout
    diff_augment: list[Augmentation] = field(default_factory=list)
    # γ of the R1 penalty on D's real inputs; 0: off; None: the task's own (TASK_R1_WEIGHTS)
    r1_weight: float | None = None
    r1_every: int = 1  # lazy R1: every this many D steps, weighted by it
    # segmentation critic (#10): opt-in, as at short budgets it cost Dice (bench/README.md)
    segmentation_critic: bool = False  # segmentation: add the adversarial critic's term
    critic_warmup: float = 0.25  # its term is off for this share of steps, then ramped in
    # what the critic sees as real labels: "scaled" one-hot at the segmenter's confidence
    # (Luc et al., 2016), so soft probabilities alone don't give fakes away, or "onehot"
    critic_real: Literal["scaled", "onehot"] = "scaled"
    # speed switches (#11); "auto" is what bench/README.md measured to pay on that device
    cudnn_benchmark: Literal["auto", "on", "off"] = "auto"  # auto: on with CUDA
    compile: bool = False  # torch.compile the nets (slower on the 2-core CPU measured)
    fused_adam: Literal["auto", "on", "off"] = "auto"  # auto: on with CUDA
    pin_memory: Literal["auto", "on", "off"] = "auto"  # queue sampler; auto: on with CUDA


@dataclass
class Config:
    task: str = "synthesis"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "the config") -> Config:
        if not isinstance(raw, dict):
            raise ConfigError(f"{source} must be a mapping of sections, got {type(raw).__name__}.")
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(
                f"{source} has unknown section(s) {sorted(map(str, unknown))}; "
                "expected 'task', 'data', 'model' and 'train'."
            )
        config = cls(**raw)  # raw values as read: validate checks and converts each one
        config.validate(source)
        return config

    def validate(self, source: str | None = None) -> None:
        """Check every field's type and range, then the settings that can't go together,
        before any data is read. ``source`` (a file) is named in the message."""
        where = f"{source}: " if source else ""
        try:
            conform(self, Config, "", RANGES)  # converts in place: lists to tuples, 10.0 to 10
        except SchemaViolation as err:
            raise ConfigError(f"{where}{err}") from None
        from .device import DEVICE_CHOICES, is_device_spec
        from .tasks.registry import available_tasks  # the tasks import this module

        if self.task not in available_tasks():
            raise ConfigError(f"{where}task is {self.task!r}; choose one of "
                              f"{', '.join(available_tasks())}.")
        if not is_device_spec(self.train.device):
            raise ConfigError(f"{where}train.device is {self.train.device!r}; use "
                              f"{DEVICE_CHOICES}.")
        if self.loss == "wgan-gp" and self.model.d_norm == "batch":
            raise ConfigError(
                f"{where}The wgan-gp loss can't be used with model.d_norm: batch (batch "
                "statistics break the gradient penalty); use d_norm: none or auto."
            )
        asked = [name for name, used in (
            ("train.diff_augment", bool(self.train.diff_augment)),
            ("train.r1_weight", bool(self.train.r1_weight)),
            ("model.g_residual", self.model.g_residual),
            ("model.d_residual", self.model.d_residual),
            ("model.local_d_channels", bool(self.model.local_d_channels))) if used]
        if asked and self.task not in DCGAN_TASKS:
            raise ConfigError(
                f"{where}{asked[0]} applies to the DCGAN tasks ({', '.join(DCGAN_TASKS)}) "
                f"only, not to task {self.task!r}; leave it at its default."
            )
        if self.train.r1_weight and self.loss == "wgan-gp":
            raise ConfigError(
                f"{where}train.r1_weight can't be used with the wgan-gp loss, whose gradient "
                "penalty already constrains the critic; set r1_weight: 0 or use another loss."
            )
        if self.model.local_d_channels and self.loss == "wgan-gp":
            raise ConfigError(
                f"{where}model.local_d_channels can't be used with the wgan-gp loss: its "
                "gradient penalty constrains D only; set local_d_channels: 0 or use another loss."
            )
        from .nets.patchgan import smallest_input

        smallest = smallest_input(self.model.local_d_layers)
        if self.model.local_d_channels and self.model.patch_size < smallest:
            raise ConfigError(
                f"{where}model.local_d_layers {self.model.local_d_layers} needs patches of at "
                f"least {smallest} voxels a side, got patch_size {self.model.patch_size}; use "
                "fewer local_d_layers or a larger patch."
            )
        repeated = {name for name in self.train.diff_augment
                    if self.train.diff_augment.count(name) > 1}
        if repeated:
            raise ConfigError(
                f"{where}train.diff_augment names {', '.join(sorted(repeated))} more than "
                "once; list each augmentation once."
            )
        lo, hi = self.data.ct_window
        if not lo < hi:
            raise ConfigError(
                f"{where}data.ct_window must be (low, high) with low < high, got {lo}, {hi}."
            )
        plo, phi = self.data.mr_percentiles
        if not 0 <= plo < phi <= 100:
            raise ConfigError(
                f"{where}data.mr_percentiles must satisfy 0 <= low < high <= 100, "
                f"got {plo}, {phi}."
            )
        p = self.model.patch_size
        if p & (p - 1):
            raise ConfigError(
                f"{where}Patch size {p} is not supported: use a power of two from 8 to 256 "
                "(e.g. 16, 32, 64)."
            )

    @property
    def loss(self) -> str:
        """The adversarial loss in use: ``train.loss``, or the task's own when "auto"."""
        if self.train.loss != "auto":
            return self.train.loss
        return TASK_LOSSES.get(self.task, "nonsaturating")

    @property
    def r1_weight(self) -> float:
        """γ of the R1 penalty: ``train.r1_weight``, or the task's own when not set (none
        with the wgan-gp loss, whose gradient penalty already constrains the critic)."""
        if self.train.r1_weight is not None:
            return self.train.r1_weight
        return 0.0 if self.loss == "wgan-gp" else TASK_R1_WEIGHTS.get(self.task, 0.0)

    @property
    def lr_d(self) -> float:
        """The critics' learning rate: ``train.lr_d``, or the task's own when not set."""
        if self.train.lr_d is not None:
            return self.train.lr_d
        return TASK_LR_D.get(self.task, DEFAULT_LR_D)

    @property
    def local_d_channels(self) -> int:
        """Width of the local critic: ``model.local_d_channels``, or the task's own when not
        set (none with the wgan-gp loss, which refuses it, nor where the patch is smaller
        than its levels take)."""
        if self.model.local_d_channels is not None:
            return self.model.local_d_channels
        from .nets.patchgan import smallest_input  # nets import torch; config doesn't

        if self.loss == "wgan-gp" or self.model.patch_size < smallest_input(
                self.model.local_d_layers):
            return 0
        return TASK_LOCAL_D_CHANNELS.get(self.task, 0)

    @property
    def d_norm(self) -> str:
        if self.model.d_norm != "auto":
            return self.model.d_norm
        return "none" if self.loss == "wgan-gp" else "batch"

    @property
    def n_critic(self) -> int:
        if self.train.n_critic > 0:
            return self.train.n_critic
        return 5 if self.loss == "wgan-gp" else 1


AT_LEAST_ONE = Range(1)
NOT_NEGATIVE = Range(0)
# widths far beyond any 3D GAN: a typo (an extra 0) is refused before memory is asked for
WIDTH = Range(1, 4096)
RANGES = {
    (DataConfig, "label_share"): Range(0, 1, low_inclusive=False),
    (DataConfig, "samples_per_volume"): AT_LEAST_ONE,
    (DataConfig, "queue_length"): AT_LEAST_ONE,
    (ModelConfig, "patch_size"): Range(8, 256),  # 256: where the memory plan allows (#11)
    (ModelConfig, "local_d_channels"): Range(0, 4096),  # 0: no local critic
    (ModelConfig, "local_d_layers"): Range(1, 6),
    **{(ModelConfig, name): WIDTH for name in ("latent_dim", "g_channels", "d_channels",
                                               "max_channels", "unet_channels",
                                               "patchgan_channels")},
    (TrainConfig, "steps"): AT_LEAST_ONE,
    (TrainConfig, "batch_size"): AT_LEAST_ONE,
    (TrainConfig, "lr_g"): Range(0, low_inclusive=False),
    (TrainConfig, "lr_d"): Range(0, low_inclusive=False),
    (TrainConfig, "betas"): Range(0, 1, high_inclusive=False),
    (TrainConfig, "n_critic"): NOT_NEGATIVE,
    **{(TrainConfig, name): NOT_NEGATIVE for name in ("gp_weight", "adversarial_weight",
                                                      "l1_weight", "cycle_weight",
                                                      "identity_weight")},
    (TrainConfig, "encoder_fraction"): Range(0, 1),
    (TrainConfig, "ema_decay"): Range(0, 1, high_inclusive=False),
    (TrainConfig, "seed"): Range(0, 2**32 - 1),
    (TrainConfig, "preview_every"): AT_LEAST_ONE,
    (TrainConfig, "checkpoint_every"): AT_LEAST_ONE,
    # data-efficient training (#10)
    (TrainConfig, "r1_weight"): NOT_NEGATIVE,
    (TrainConfig, "r1_every"): AT_LEAST_ONE,
    # segmentation critic (#10)
    (TrainConfig, "critic_warmup"): Range(0, 1, high_inclusive=False),
}


def load_config(path: str | Path) -> Config:
    """Read a YAML or JSON config file (JSON is YAML, so one parser serves both)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"Config file {path} is a folder; give a YAML or JSON file.")
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        raw = yaml.load(path.read_text(), Loader=_loader()) or {}
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        problem = "it is nested too deeply" if isinstance(err, RecursionError) else err
        if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
            mark = err.problem_mark  # one line, not PyYAML's several with a caret
            problem = f"{err.problem} (line {mark.line + 1}, column {mark.column + 1})"
        raise ConfigError(f"Config file {path} is not valid YAML/JSON: {problem}.") from err
    return Config.from_dict(raw, source=f"config file {path}")


def _loader() -> type:
    """PyYAML's safe loader, reading ``1e-4`` as a number as JSON and YAML 1.2 do (PyYAML
    follows YAML 1.1, where only ``1.0e-4`` is one, and ``lr_g: 1e-4`` would be text),
    and refusing a key given twice in one mapping."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            """A key given twice is refused: PyYAML would keep the last one silently."""
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key_node.tag != "tag:yaml.org,2002:merge" and isinstance(key, str):
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"{key} is given twice", key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_NUMBER,
                                 list("-+0123456789."))
    return Loader


_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$")


def save_config(config: Config, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``config`` as JSON (``.json``) or YAML (any other suffix), whole or not at all;
    an existing file is kept unless ``overwrite``."""
    path = check_output(path, kind="file", overwrite=overwrite)
    if path.suffix == ".json":
        text = json.dumps(config.to_dict(), indent=2)
    else:
        import yaml

        text = yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False)
    return write_atomically(path, lambda temporary: temporary.write_text(text))
