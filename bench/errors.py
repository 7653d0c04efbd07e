"""Errors the CLI turns into one clear line and exit code 2, before anything is computed or written."""


class UsageError(Exception):
    """Bad input: an unknown name, an incompatible pair, an invalid override, missing data."""


class DataMissing(UsageError):
    """A dataset's files are not where they should be."""


class PluginImportError(UsageError):
    """A registered plugin could not be imported."""


class InvariantViolation(RuntimeError):
    """A result broke an invariant (robust <= clean, verified <= empirical): the cell fails."""


class NotCertifiable(Exception):
    """A certifier cannot bound this model (e.g. an unsupported layer): recorded as such, not as a crash."""
