"""The one exception type for user mistakes: the CLI prints it as a single line and exits non-zero.

May import: nothing of itersg.
"""


class UserError(Exception):
    """A problem the user can fix (bad input file, missing data, wrong parameter).

    The message must say what is wrong, which file/field, and what to do about it. The CLI prints
    ``itersg: error: <message>`` and exits with status 2 instead of showing a traceback.
    """
