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


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device or host out-of-memory error, however a library wrapped it (auto_LiRPA's
    TorchScript re-raises CUDA's as a plain RuntimeError): a matter of load, not of the model."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and out_of_memory_error(type(exc).__name__, str(exc))


def out_of_memory_error(type_name: str, message: str) -> bool:
    """The same judgement from a failed record's error type and message."""
    return type_name in ("OutOfMemoryError", "MemoryError") or "out of memory" in message.lower()
