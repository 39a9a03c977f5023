"""StopRequest restores SIGTERM on exit, or ignores it from then on when a stopped rank asked so."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from itersg.engine.signals import StopRequest

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested and stop.received == signal.SIGUSR1
        if sys.argv[1] == "ignore":
            stop.ignore_sigterm_after()
    os.kill(os.getpid(), signal.SIGTERM)
    print("survived SIGTERM", flush=True)
""")


@pytest.mark.parametrize(("mode", "returncode"), [("restore", -signal.SIGTERM), ("ignore", 0)])
def test_sigterm_after_the_context(mode, returncode):
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60)
    assert result.returncode == returncode, result.stderr
    assert ("survived SIGTERM" in result.stdout) == (mode == "ignore")
    assert "received SIGUSR1" in result.stderr
