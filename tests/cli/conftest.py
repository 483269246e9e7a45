"""Fixtures shared by the command-line tests."""

import pytest

from flmr.cli.main import main
from helpers import FLMR_TINY


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory):
    """The shipped sample collection indexed with the tiny FLMR through `flmr index`."""
    output = tmp_path_factory.mktemp("cli") / "sample_index"
    code = main(
        [
            "index",
            "--checkpoint",
            str(FLMR_TINY),
            "--collection",
            "sample",
            "--output",
            str(output),
            "--quiet",
        ]
    )
    assert code == 0
    return output
