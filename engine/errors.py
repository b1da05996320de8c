"""The one error type users see: a message naming what is wrong, where, and what to do."""


class PxglError(Exception):
    """Bad input or an unusable environment. The CLI prints it as one line and exits with status 2."""
