"""The MedGAN module's parts that need no Slicer application: they run on ``slicer-core``.

``logic`` (what the module does, on MRML nodes), ``convert`` (volume node ↔ core
``Volume``), ``process`` (the background ``medgan train`` process). Heavy imports
(torch, the core) happen when ``logic`` is imported, never when this package is.
"""
