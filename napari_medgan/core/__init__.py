"""The PyTorch core shared by every face. No Qt, napari or Slicer imports below here.

Faces use :mod:`napari_medgan.core.api` and the dataclasses it returns.
"""
