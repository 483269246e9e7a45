"""The original implementation's golden outputs, replayed by the shared checker."""

import os
import subprocess
import sys

from helpers import REPO_ROOT, SHARED


def test_both_fixtures_match_the_original_implementation():
    checker = SHARED / "fidelity" / "check_fidelity.py"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(checker), "--impl", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fidelity: 2/2 fixtures pass" in result.stdout
