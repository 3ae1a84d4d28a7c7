"""Stage ``export``: torch model -> NIR graph, NIR file I/O, the NIR reference interpreter.

This subpackage shares its name with the API function ``snn_compile.export`` (once the
subpackage is imported, Python makes it the package attribute ``snn_compile.export``).
So that both readings work, the subpackage itself is callable:
``snn_compile.export(model, path, example=None, check=True)`` is ``snn_compile.api.export``
whichever object the name holds (see that function for the arguments).
"""

import sys as _sys
import types as _types


class _CallableStage(_types.ModuleType):
    """The ``snn_compile.export`` subpackage, callable as ``snn_compile.api.export``."""

    def __call__(self, *args, **kwargs):
        from snn_compile.api import export
        return export(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableStage
