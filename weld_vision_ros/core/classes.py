"""The defect class set shared by the rules, the models, the datasets and the messages."""
from __future__ import annotations

from typing import Sequence

DEFAULT_CLASS_NAMES: tuple[str, ...] = ('good', 'porosity', 'undercut', 'spatter', 'gap', 'crack')
GOOD = 'good'


class UnknownClassError(ValueError):
    """A class name that is not in the class set."""


def check_class_name(name: str, class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> str:
    """Return `name` if it is one of `class_names`, else raise UnknownClassError."""
    if name not in class_names:
        raise UnknownClassError(
            f'unknown class {name!r}; valid classes are: {", ".join(class_names)}')
    return name
