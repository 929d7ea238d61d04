import pytest

from unifashion.data.synth.generate import LAYOUTS, SynthConfig, write_fashionsynth


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small FashionSynth catalogue in every layout, written once per test session."""
    out = tmp_path_factory.mktemp("synth") / "fs"
    summary = write_fashionsynth(
        out, SynthConfig(products=90, seed=3, size=64, tryon=30, layouts=LAYOUTS), progress=False
    )
    return out, summary
