"""The one exception type for problems a user can fix: the CLI prints its message on one line."""


class TextaeError(Exception):
    """A user error (bad input, bad option, bad model folder). Its message says what and where."""


class NoSpaceError(TextaeError):
    """A write failed because the disk (or quota) is full; what was there before is unchanged."""
