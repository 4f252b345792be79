"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input (missing file, wrong shape, NaN, corrupt checkpoint...).

    The message must be one line and say what to fix.
    """


class CheckpointError(UserError):
    """A checkpoint that cannot be read, or does not match the model it is loaded into."""
