"""The generic checker: a field added to a config section or the card needs no code."""

import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from napari_medgan.core.schema import Range, SchemaViolation, conform


@dataclass
class Inner:
    size: int = 4


@dataclass
class Section:
    series: str | None = None  # a field of the kind a DICOM series choice would add
    kinds: list[Literal["a", "b"]] = field(default_factory=list)
    grid: tuple[tuple[float, float], ...] = ((0.0, 1.0),)
    inner: Inner = field(default_factory=Inner)


RANGES = {(Inner, "size"): Range(1, 8)}


def test_a_new_field_is_checked_from_its_annotation_alone():
    section = conform({"series": "1.2.840.1", "kinds": ["b"], "grid": [[1, 2], [3, 4.5]],
                       "inner": {"size": 8.0}}, Section, "data", RANGES)
    assert section == Section("1.2.840.1", ["b"], ((1.0, 2.0), (3.0, 4.5)), Inner(8))
    assert isinstance(section.inner.size, int) and conform({}, Section, "data").series is None


@pytest.mark.parametrize(("raw", "message"), [
    ({"series": 7}, "data.series must be a string, got 7."),
    ({"kinds": ["c"]}, "data.kinds[0] is 'c'; choose one of a, b."),
    ({"grid": [[1, 2, 3]]}, "data.grid[0] must be a list of 2 numbers, got [1, 2, 3]."),
    ({"grid": []}, "data.grid must hold at least one value"),
    ({"inner": {"size": 9}}, "data.inner.size must be in [1, 8], got 9."),
    ({"inner": {"size": True}}, "data.inner.size must be a number, got True."),
    ({"inner": {"width": 2}}, "data.inner has unknown key(s) ['width']"),
    ({"inner": [[[[[[[[1]]]]]]]]}, "data.inner must be a mapping, got"),
])
def test_what_does_not_fit_is_named_with_its_path(raw, message):
    with pytest.raises(SchemaViolation, match=re.escape(message)):
        conform(raw, Section, "data", RANGES)


def test_ranges_read_as_intervals():
    assert str(Range(0, 1, high_inclusive=False)) == "in [0, 1)"
    assert str(Range(0, low_inclusive=False)) == "greater than 0"
    assert 1 in Range(0, 1) and 1 not in Range(0, 1, high_inclusive=False)
