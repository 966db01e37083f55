"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class ArsmoothError(Exception):
    """A user-facing error: the message names the bad value, the expected one and what to do."""


class WriteFailed(ArsmoothError):
    """A file could not be written (a full disk, a vanished folder); the message says what, and that the
    previous version of the file is intact."""
