"""The one exception a user's mistake raises."""


class NfieldsError(Exception):
    """A user's mistake: one sentence that says what is wrong and how to fix it.

    The command line prints it without a traceback and exits with code 2.
    """
