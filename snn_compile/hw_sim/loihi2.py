"""Is a real Loihi 2 usable from here? (Intel's proprietary ``lava-loihi`` package.)

Lava's open-source release (``lava-nc``) has ``Loihi2HwCfg`` but no neurocore
process models nor a compiler for the chip; those come with ``lava-loihi``,
which Intel distributes to INRC members. ``lava.utils.loihi.is_installed``
checks for it the way Lava itself does.
"""

from __future__ import annotations

from snn_compile.compiler.lower_lava import io_model_map
from snn_compile.errors import UserError

NOT_AVAILABLE = ("the loihi2 backend needs Intel's lava-loihi package and a Loihi 2 system "
                 "(neither is installed here); use --backend lava-sim to run the "
                 "bit-accurate Loihi 2 simulator instead")


def lava_loihi_installed() -> bool:
    """True when ``lava-loihi`` (neurocore models, Loihi 2 compiler) is importable."""
    try:
        from lava.utils.loihi import is_installed
    except ImportError:
        return False
    try:
        return bool(is_installed())
    except (ImportError, ValueError):
        return False


def require_loihi2() -> None:
    """Raise ``UserError`` naming the fix when no Loihi 2 backend is available."""
    if not lava_loihi_installed():
        raise UserError(NOT_AVAILABLE)


def run_config(hardware: bool = False):
    """The Lava run configuration: bit-accurate simulator, or the chip.

    Injector/Extractor have no ``fixed_pt`` models, so their Loihi-protocol
    Python models are named explicitly (they run on the host in both cases).
    """
    if hardware:
        require_loihi2()
        from lava.magma.core.run_configs import Loihi2HwCfg
        return Loihi2HwCfg(select_tag="fixed_pt", exception_proc_model_map=io_model_map())
    from lava.magma.core.run_configs import Loihi2SimCfg
    return Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=io_model_map())
