"""Convert a version-1 snn_compile checkpoint (a ``torch.save`` pickle) to version 2.

    python -m snn_compile.models.convert_checkpoint OLD.pt NEW.pt

Version 2 is a safetensors file with a checksum (snn_compile/models/checkpoint.py);
the weights are kept bit for bit. Convert only files from a source you trust: the old
format is a pickle, and reading one is what version 2 exists to avoid.
"""

from __future__ import annotations

import argparse
import sys

from snn_compile.errors import exits_on_user_error
from snn_compile.models.checkpoint import CONVERT, checksum_of, convert_v1


@exits_on_user_error
def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog=CONVERT, description="Convert a version-1 snn_compile checkpoint (a torch.save "
        "pickle) to the version-2 safetensors format. Convert only files you trust.")
    p.add_argument("old", metavar="OLD.pt", help="version-1 checkpoint")
    p.add_argument("new", metavar="NEW.pt", help="version-2 checkpoint to write (atomically)")
    a = p.parse_args(argv)
    out = convert_v1(a.old, a.new)
    print(f"wrote {a.new}: {len(out['state_dict'])} weight tensors, model {out['model_kind']}, "
          f"checksum sha256 {checksum_of(a.new)[:16]}...", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
