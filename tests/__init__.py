"""A package, so that ``tests/slicer`` is ``tests.slicer`` and not a part of the ``slicer``
namespace that slicer-core extends over every ``slicer`` folder on ``sys.path``."""
