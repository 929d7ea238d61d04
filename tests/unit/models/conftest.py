"""A tiny retrieval model trained once per session on a small FashionSynth, shared by the pipeline tests."""

import pytest

from unifashion import cli


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval")
    data = root / "fs"
    assert (
        cli.main(
            [
                "data",
                "synth",
                "--out",
                str(data),
                "--products",
                "260",
                "--size",
                "64",
                "--quiet",
                "--layouts",
                "fashioniq",
            ]
        )
        == 0
    )
    model = root / "model"
    code = cli.main(
        [
            "train",
            "retrieval",
            "--data",
            str(data),
            "--out",
            str(model),
            "--preset",
            "tiny",
            "--phase1-epochs",
            "2",
            "--phase2-epochs",
            "2",
            "--batch-size",
            "32",
        ]
    )
    assert code == 0
    return data, model
