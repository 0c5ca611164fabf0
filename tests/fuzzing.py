"""The fuzz suites' in-process command runner (tests/test_fuzz_*.py): ``neagari.cli.main`` with
captured output under a per-case time limit. Not collected by pytest (no ``test_`` prefix)."""

from __future__ import annotations

import contextlib
import io
import signal

import pytest

from neagari.cli import main


class Hang(Exception):
    pass


def run_cli(argv: list[str], timeout_s: int) -> tuple[int, str, str]:
    """main(argv) in-process: (exit status, stdout, stderr). A case that outlives ``timeout_s`` or
    lets an exception escape (a traceback for the user) fails the test."""
    def alarm(signum, frame):
        raise Hang(f"no answer within {timeout_s} s")

    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    except Hang:
        pytest.fail(f"hang: {argv}")
    except BaseException as e:
        pytest.fail(f"{argv}: uncaught {type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, out.getvalue(), err.getvalue()
