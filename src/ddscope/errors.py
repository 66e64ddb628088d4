"""User-facing errors: the CLI turns these into one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, data files, store, checkpoint).

    The message must be one line naming the problem and what is allowed.
    """
