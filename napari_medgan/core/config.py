"""Typed training configuration, read from and written to YAML / JSON.

The checkpoint card embeds ``Config.to_dict()``, so a run can always be repeated
from its checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .output import check_output, write_atomically

MODALITIES = ("auto", "ct", "mr")
SAMPLERS = ("device", "queue")
LOSSES = ("auto", "nonsaturating", "hinge", "lsgan", "wgan-gp")
# what "auto" means per task: each task's published recipe
TASK_LOSSES = {"anomaly": "wgan-gp", "cycle": "lsgan"}
UPSAMPLING = ("transpose", "resize")


@dataclass
class DataConfig:
    """Which volumes to learn from and how to turn them into patches."""

    paths: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)  # sampling region, or holes (inpainting)
    targets: list[str] = field(default_factory=list)  # paired (translation) or a set (cycle)
    labels: list[str] = field(default_factory=list)  # label maps (segmentation)
    label_share: float = 0.5  # share of patches centred on labelled voxels; the rest anywhere
    resample_pairs: bool = False  # bring partners on another grid onto their volume's grid
    modality: str = "auto"  # "ct" (HU window), "mr" (percentiles) or "auto" (guess per data set)
    target_modality: str = "auto"  # the same, for the targets
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    spacing_mismatch: str = "resample"  # "resample" onto the first volume's spacing, or "refuse"
    sampler: str = "device"  # "device": volumes on the training device; "queue": torchio Queue
    samples_per_volume: int = 16  # queue sampler only
    queue_length: int = 256  # queue sampler only


@dataclass
class ModelConfig:
    """Sizes of the nets; everything needed to rebuild them from a card."""

    patch_size: int = 32
    latent_dim: int = 128
    g_channels: int = 32  # generator width at full resolution; doubles per level down
    d_channels: int = 32  # discriminator width at full resolution; doubles per level down
    max_channels: int = 256
    upsample: str = "transpose"  # "resize": interpolate + conv, against checkerboard artefacts
    spectral_norm: bool = False  # spectral normalisation in the discriminator
    unet_channels: tuple[int, ...] = (16, 32, 64, 128)  # U-Net widths per level, finest first
    patchgan_channels: int = 32  # PatchGAN width of its first layer
    d_norm: str = "auto"  # discriminator normalisation: "batch", "none"; auto: none for wgan-gp


@dataclass
class TrainConfig:
    """The optimisation: steps, losses, device and bookkeeping."""

    steps: int = 200
    batch_size: int = 8
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    loss: str = "auto"  # "auto": wgan-gp for anomaly, lsgan for cycle, else nonsaturating
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
    amp: bool = True  # bfloat16 autocast; CUDA only
    channels_last: str = "auto"  # channels_last_3d memory layout: "auto" (= on), "on", "off"
    preview_every: int = 50
    checkpoint_every: int = 100


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
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        unknown = set(raw) - {"task", *sections}
        if unknown:
            raise ConfigError(
                f"{source} has unknown section(s) {sorted(unknown)}; "
                f"expected 'task' and {sorted(sections)}."
            )
        built = {
            name: _section(kind, raw.get(name, {}), f"{source} [{name}]")
            for name, kind in sections.items()
        }
        config = cls(task=str(raw.get("task", "synthesis")), **built)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse settings that can't work, before any data is read."""
        _choice("data.modality", self.data.modality, MODALITIES)
        _choice("data.target_modality", self.data.target_modality, MODALITIES)
        _choice("data.sampler", self.data.sampler, SAMPLERS)
        _choice("data.spacing_mismatch", self.data.spacing_mismatch, ("resample", "refuse"))
        _choice("train.loss", self.train.loss, LOSSES)
        _choice("model.upsample", self.model.upsample, UPSAMPLING)
        _choice("train.channels_last", self.train.channels_last, ("auto", "on", "off"))
        _choice("model.d_norm", self.model.d_norm, ("auto", "batch", "none"))
        if self.loss == "wgan-gp" and self.model.d_norm == "batch":
            raise ConfigError(
                "The wgan-gp loss can't be used with model.d_norm: batch (batch statistics "
                "break the gradient penalty); use d_norm: none or auto."
            )
        if not 0.0 < self.data.label_share <= 1.0:
            raise ConfigError(f"data.label_share must be in (0, 1], got {self.data.label_share}.")
        lo, hi = self.data.ct_window
        if not lo < hi:
            raise ConfigError(
                f"data.ct_window must be (low, high) with low < high, got {lo}, {hi}."
            )
        plo, phi = self.data.mr_percentiles
        if not 0 <= plo < phi <= 100:
            raise ConfigError(
                f"data.mr_percentiles must satisfy 0 <= low < high <= 100, got {plo}, {phi}."
            )
        p = self.model.patch_size
        if p < 8 or p & (p - 1):
            raise ConfigError(
                f"Patch size {p} is not supported: use a power of two from 8 to 128 "
                "(e.g. 16, 32, 64)."
            )
        for name in (
            "steps",
            "batch_size",
            "latent_dim",
            "g_channels",
            "d_channels",
            "preview_every",
            "checkpoint_every",
        ):
            section = self.train if hasattr(self.train, name) else self.model
            if getattr(section, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(section, name)}.")
        if not 0.0 <= self.train.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.train.ema_decay}.")

    @property
    def loss(self) -> str:
        """The adversarial loss in use: ``train.loss``, or the task's own when "auto"."""
        if self.train.loss != "auto":
            return self.train.loss
        return TASK_LOSSES.get(self.task, "nonsaturating")

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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} is {value!r}; choose one of {', '.join(allowed)}.")


def _section(kind: type, raw: Any, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping, got {type(raw).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise ConfigError(
            f"{source} has unknown key(s) {sorted(unknown)}; known: {sorted(fields)}."
        )
    values = {}
    for key, value in raw.items():
        default = getattr(kind(), key)
        if isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, list):
            value = [str(v) for v in value]
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}.{key} must be true or false, got {value!r}.")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{source}.{key} must be a number, got {value!r}.")
            if isinstance(default, int):
                if isinstance(value, float) and not value.is_integer():
                    raise ConfigError(f"{source}.{key} must be a whole number, got {value!r}.")
                value = int(value)
            else:
                value = float(value)
        values[key] = value
    return kind(**values)


def load_config(path: str | Path) -> Config:
    """Read a YAML or JSON config file (JSON is YAML, so one parser serves both)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"Config file {path} is not valid YAML/JSON: {err}") from err
    return Config.from_dict(raw, source=f"config file {path}")


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
