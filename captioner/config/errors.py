"""The errors a user can act on from the message alone."""


class UserError(Exception):
    """A failure the user can act on from its message alone: the command logs it, without a traceback, and exits
    with ``exit_status``. Each wing raises its own subclass; the command line needs none of their imports."""

    exit_status = 2
    prefix = ""


class ConfigError(UserError, ValueError):
    """A setting a user can fix; the message says how."""
