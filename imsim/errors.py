"""One exception type for problems a user can fix (bad input, missing data or weights).

Command-line entry points catch it and print its message as a single line with a non-zero exit,
so users see an actionable sentence rather than a traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message saying what to do."""
