"""Argument checks shared by the constructors and configs of every stage."""
from __future__ import annotations

import numbers


def check_positive_int(name: str, value: object, owner: str | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer ``>= 1``.

    Python and NumPy integers pass; ``bool`` does not, although it is an ``int`` subclass:
    ``True`` as a layer count is a mistake, not a 1.

    Args:
        name (str): the argument's name, as the caller spells it.
        value: the value to check.
        owner (str, optional): the class (or function) the argument belongs to; the message
            then names it as ``'Owner' needs a positive integer name, got value``. Without it:
            ``name must be >= 1, got value`` (default: :obj:`None`).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        if owner is None:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
        raise ValueError(f"'{owner}' needs a positive integer {name}, got {value!r}")
