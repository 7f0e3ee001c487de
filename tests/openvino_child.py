"""Run OpenVINO code in a fresh interpreter, for the image and text backend tests.

OpenVINO is loaded only in child processes: a pytest process that had compiled several graphs and then
forked DataLoader workers for later tests crashed (SIGSEGV) on this machine, so the suite keeps OpenVINO
out of its own process (conftest sets MMSEARCH_IMAGE_BACKEND/MMSEARCH_TEXT_BACKEND=torch for the rest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO


def in_child(code: str, cache_dir, timeout: float = 900) -> dict:
    """Run ``code`` (dedented) with its own model cache dir and backends on auto; -> the JSON it prints last."""
    env = dict(os.environ, MMSEARCH_CACHE_DIR=str(cache_dir), MMSEARCH_IMAGE_BACKEND="auto", MMSEARCH_TEXT_BACKEND="auto")
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=timeout)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1])
