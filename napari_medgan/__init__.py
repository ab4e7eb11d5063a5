"""napari-medgan: 3D GANs for medical images (core, napari plugin, Slicer module, CLI).

Kept import-light: ``import napari_medgan`` pulls in neither torch nor Qt.
"""

__version__ = "0.1.0"
