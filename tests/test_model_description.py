"""The demo model's layout as the docs state it is the layout the code builds."""

import re
from pathlib import Path

from torch import nn

from critui.builtin.models import SmallCNN

DOCS = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def built_layout(depth: int = 6) -> str:
    """'16-16-32s2-...': each conv layer's output channels, with s2 where it downsamples."""
    model = SmallCNN().build((1, 16, 16), 10, depth=depth, width=16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return "-".join(f"{c.out_channels}" + ("s2" if c.stride[0] == 2 else "") for c in convs)


def test_results_page_and_description_name_the_layout_the_code_builds():
    layout = built_layout()
    stated = re.search(r"`models\.cnn`: 6 conv-BN-ReLU layers \(([0-9s-]+)\)", DOCS.read_text())
    assert stated, "docs/results.md no longer states the demo model's layout"
    assert stated.group(1) == layout
    assert layout in SmallCNN.description


def test_results_page_names_the_depth_panels_layouts_the_code_builds():
    # The depth panel (configs/demo-depth.toml) compares depths 4, 6 and 8; the page states
    # the two other layouts in its setup list.
    text = DOCS.read_text()
    for depth in (4, 8):
        stated = re.search(rf"depth {depth}\s+\(([0-9s-]+)\)", text)
        assert stated, f"docs/results.md no longer states the depth-{depth} layout"
        assert stated.group(1) == built_layout(depth)


def test_deeper_nets_keep_their_last_layers_at_4x4_or_wider():
    # A third downsampling (to 2x2 with 128 channels) made depth 8 memorise the demo data.
    model = SmallCNN().build((1, 16, 16), 10, depth=8, width=16)
    strides = [m.stride[0] for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert strides.count(2) == 2
    assert built_layout(4) == "16-16-32s2-32" and built_layout(6) == "16-16-32s2-32-64s2-64"
