"""The config template of ``xaimed init`` shows a newcomer the 2D, slice-wise and
multi-sequence options next to the others, and each one validates once uncommented."""

from __future__ import annotations

import pytest

from xaimed.config import load_config
from xaimed.templates import render_template


@pytest.mark.parametrize(
    ("commented", "replacements"),
    [
        ("  # spatial_dims: 2", {"  input_size: [48, 48, 48]": "  input_size: [48, 48]"}),
        ("  # slicewise: {axis: axial, context: 0}", {}),
        (
            "    # names: [t1, t1ce, t2, flair]",
            {
                "    source: single": "    source: columns",
                "  in_channels: 1\n": "  in_channels: 4\n",
                "    # resample_to: t1": "    resample_to: t1",
            },
        ),
    ],
)
def test_commented_options_validate_when_uncommented(tmp_path, commented, replacements):
    text = render_template()
    assert commented in text
    text = text.replace(commented, commented.replace("# ", "", 1), 1)
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    load_config(path)  # raises ConfigError listing every problem
