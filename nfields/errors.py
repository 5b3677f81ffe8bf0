"""The one exception a user's mistake raises."""


class NfieldsError(Exception):
    """A user's mistake: one sentence that says what is wrong and how to fix it.

    The command line prints it without a traceback and exits with code 2.
    """


def notice(message: str) -> None:
    """Tell the user something they should know, but that is no error: one line on stderr."""
    import sys

    print(f"nfields: {message}", file=sys.stderr, flush=True)
