"""Generate a national-size MSSanté extraction (issue 6): 540,000 rows by default.

.venv/bin/python bench/make_annuaire.py var/bench/Extraction_Correspondance_MSSante_202611300300.txt
.venv/bin/python bench/make_annuaire.py OUT --rows 540000 --zip
.venv/bin/python bench/make_annuaire.py OUT --from FILE --change 1   # next day's file, 1 % changed
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mssante_portal.settings")
os.environ.setdefault("PORTAL_ENV", "test")

from devtools.annuaire_gen import mutate, write


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=540_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--zip", action="store_true", help="also write the published .zip")
    parser.add_argument("--from", dest="source", type=Path, help="mutate this file instead")
    parser.add_argument("--change", type=float, default=1.0, help="percent of rows changed")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.source:
        counts = mutate(args.source, args.out, args.change)
        print(f"{args.out}: {counts}")
    else:
        write(args.out, args.rows, seed=args.seed)
        print(f"{args.out}: {args.rows} rows, {args.out.stat().st_size / 1e6:.1f} Mo")
    if args.zip:
        archive = args.out.with_suffix(".zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(args.out, args.out.name)
        print(f"{archive}: {archive.stat().st_size / 1e6:.1f} Mo")
    print(f"{time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
