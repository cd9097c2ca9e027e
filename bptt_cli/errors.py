"""Exceptions the library raises; the CLI turns each into one line and an exit code."""


class BpttError(Exception):
    """Bad input or usage: the message names the problem and the fix (exit code 2)."""

    exit_code = 2


class RunFailed(BpttError):
    """The run itself failed, e.g. the loss diverged (exit code 1)."""

    exit_code = 1
