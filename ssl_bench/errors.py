"""The one exception type for mistakes a user can fix (bad names, impossible settings, missing files)."""


class UserError(Exception):
    """A problem with the user's input. The CLI prints it as one line and exits with code 2."""
