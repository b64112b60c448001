"""A restricted unpickler for the P5 pickles (`exp_splits.pkl`, `user_id2name.pkl`, `item2img_dict.pkl`).

Those files come from the internet, and `pickle.load` runs whatever callable a file names. Plain containers and scalars
need no callable at all (they have their own opcodes), so only a short list of harmless constructors is admitted; any
other global (e.g. `os.system`, `builtins.eval`, numpy or pandas objects) is refused with the file name in the error.
"""

from __future__ import annotations

import _compat_pickle
import pickle
from pathlib import Path
from typing import Any

from .errors import DataFormatError

# (module, name) pairs a plain-data pickle may need: protocol <= 3 encodes sets, bytes and these collections by name.
ALLOWED_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "str"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # protocols 0-2 may name Python 2 modules (`__builtin__.set`); judge the Python 3 names they stand for
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: only plain containers and scalars are allowed"
        )


def load_pickle(path: str | Path) -> Any:
    """Unpickle a file that may only contain dicts, lists, tuples, sets, strings, bytes, numbers, booleans and None."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return _RestrictedUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataFormatError(path, f"not a plain-data pickle ({err})") from err
