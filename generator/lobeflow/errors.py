"""Errors with user-facing messages; the CLI prints them and exits 1, with no traceback."""


class LobeflowError(Exception):
    """Base class of every error whose message is meant for the user."""


class InvalidNameError(LobeflowError):
    """An entity, plural, verb or workflow name that cannot become identifiers and routes."""


class InvalidAnswerError(LobeflowError):
    """A template answer (sizes, flow control, retries, logic reference) out of its domain."""


class InvalidSettingError(LobeflowError):
    """An environment setting that a generated app would refuse (a flow-control override)."""


class DestinationError(LobeflowError):
    """The destination cannot be written, or writing would clobber files."""


class TemplateError(LobeflowError):
    """The template could not be found or rendered."""
