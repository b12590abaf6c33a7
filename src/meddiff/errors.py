"""User-facing errors.

Anything the user can cause (bad file, bad option, bad config, unknown model) raises
:class:`MeddiffError` with a one-line message. The CLI prints ``meddiff: error: <message>`` and
exits with code 2; it never shows a traceback for these.
"""


class MeddiffError(Exception):
    """A problem with the user's input, described in one line."""


class InputError(MeddiffError):
    """An input file or array is missing, unreadable, or has the wrong shape / values."""


class ConfigError(MeddiffError):
    """A configuration file or option is invalid (unknown key, wrong type, bad value)."""
