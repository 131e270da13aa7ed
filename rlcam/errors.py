"""The one exception type that means "the user's input is wrong"."""


class RlcamError(Exception):
    """Bad input, stated in one sentence that says what is wrong and, where possible, the fix.

    The CLI prints the message alone and exits with status 2; anything else that
    escapes is a bug (status 1).
    """
