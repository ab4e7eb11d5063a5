"""The napari face: reader, writer, sample data and the Train, Synthesize and Apply widgets.

Everything here calls the core through ``napari_medgan.core.api`` only; layer geometry
is converted in one place, :mod:`.convert`.
"""
