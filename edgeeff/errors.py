"""Project errors: each carries a one-line, actionable message that the CLI prints without a traceback."""

from __future__ import annotations


class EdgeeffError(Exception):
    """A user-facing failure. ``exit_code`` follows the CLI convention (2: bad input / could not run)."""

    exit_code = 2


class UnknownNameError(EdgeeffError):
    """A name (variant, target, device, weights) that is not registered."""


class VariantError(EdgeeffError):
    """A variant spec that cannot be built (bad phi, resolution, override)."""


class WeightsError(EdgeeffError):
    """Weights that are missing, corrupt, or for another variant."""


class ImageError(EdgeeffError):
    """An image that cannot be decoded."""


class BackendMissingError(EdgeeffError):
    """An optional backend package is not installed; the message names the pip command."""


class ValidationError(EdgeeffError):
    """A converted artifact failed validation against its reference; ``failures`` lists all of them."""

    exit_code = 1

    def __init__(self, message: str, failures: list[str] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


def unknown_name(names, name: str, what: str) -> UnknownNameError:
    """The one-line error for a name that is not among ``names``, with the nearest one."""
    import difflib

    close = difflib.get_close_matches(name.strip().lower(), list(names), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownNameError(f"unknown {what} {name!r}.{hint} Valid: {', '.join(names)}")


def lookup(table: dict, name: str, what: str):
    """``table[name]`` for a registry (targets, devices), or one line with the nearest name."""
    key = name.strip().lower()
    if key not in table:
        raise unknown_name(table, name, what)
    return table[key]
