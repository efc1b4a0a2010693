"""The one error type users see: a message that says what, where and how to fix."""


class BuildError(Exception):
    """A failure the user can act on; the CLI prints it as one line, exit 1."""
