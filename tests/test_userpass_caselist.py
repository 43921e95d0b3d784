"""A case list whose header repeats a column xaimed reads (``T1`` and ``t1``: names match
ignoring case) is refused in one sentence: either column could have been read."""

from __future__ import annotations

import pytest

from xaimed.errors import InputError
from xaimed.io.caselist import read_case_list


@pytest.mark.parametrize(
    ("header", "channels", "name", "spelled"),
    [
        ("case_id,t1,T1,flair", ("t1", "flair"), "t1", "t1, T1"),
        ("case_id,path,Path", None, "path", "path, Path"),
        ("case_id,path,mask,MASK", None, "mask", "mask, MASK"),
    ],
)
def test_a_repeated_column_is_refused_naming_it(tmp_path, header, channels, name, spelled):
    listing = tmp_path / "cases.csv"
    cells = ",".join(["c1"] + ["a.nii.gz"] * (header.count(",")))
    listing.write_text(f"{header}\n{cells}\n")
    with pytest.raises(InputError) as caught:
        read_case_list(listing, channels)
    count = spelled.count(",") + 1
    assert str(caught.value) == (
        f"case list {listing}: the header has the column {name} {count} times ({spelled}; column "
        "names match ignoring case); keep one of them."
    )


def test_other_repeated_columns_are_ignored_as_before(tmp_path):
    listing = tmp_path / "cases.csv"
    listing.write_text("case_id,path,note,Note\nc1,a.nii.gz,x,y\n")
    (case,) = read_case_list(listing)
    assert case.case_id == "c1" and case.path == (tmp_path / "a.nii.gz").resolve()
