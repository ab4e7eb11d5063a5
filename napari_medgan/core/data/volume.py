"""The volume contract shared by the core and every face."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Volume:
    """A 3D image with its geometry.

    ``tensor`` is ``(C, D, H, W)`` (float32; an integer type for label maps) whose
    three spatial axes are the voxel axes ``i, j, k`` of ``affine`` (the same order
    torchio uses), and ``affine`` is the 4x4 matrix mapping ``(i, j, k, 1)`` to RAS
    millimetres. Keeping the two together is what lets spacing and orientation
    survive every round trip.
    """

    tensor: torch.Tensor
    affine: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        if self.tensor.ndim != 4:
            raise ValueError(
                f"Volume tensor must be (C, D, H, W), got shape {tuple(self.tensor.shape)}"
            )
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got {self.affine.shape}")

    def __str__(self) -> str:
        """How messages and the card's data summary name a volume that has no file."""
        return self.name or "an unnamed in-memory volume"

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.tensor.shape[1:])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """3x3 rotation part of the affine (unit columns)."""
        return self.affine[:3, :3] / np.asarray(self.spacing)
