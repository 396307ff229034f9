"""Exceptions. `UsageError` is bad input (the command line exits 2); `ClaimFailed` is a claim
that the experiment did not support (the run exits 1)."""


class UsageError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""


class ClaimFailed(AssertionError):
    """A claim did not hold: the message gives predicted, measured and the miss."""
