#!/usr/bin/env python
"""Check that a tokenizer's fast paths give the ids tokenizer.json gives, on every text of some TSV files.

For a tokenizer folder (a tier folder, or a base model such as all-mpnet-base-v2), the runtime's default
encoder (the C++ WordPiece for plain-ASCII texts of an uncased WordPiece, the rest through the OpenVINO
tokenizer when the folder has one, else tokenizer.json) is compared id for id, and truncation flag for flag,
with tokenizer.json run through the `tokenizers` library. Pairs always go to tokenizer.json; single columns are
checked one by one. Prints one line per file and column, and exits 1 on any difference.

Example:
    python scripts/check_tokenizer.py --folder models/sst2/tier2 ../shared/data/sst2/dev.tsv:sentence \\
        ../shared/data/cola/train.tsv:sentence "../shared/data/mrpc/test.tsv:#1 String" "../shared/data/mrpc/test.tsv:#2 String"
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import _common  # noqa: F401 - puts the checkout on sys.path

from tango_edge.tier import Tier
from tango_edge.tokenization import TOKENIZER_FILE, TextEncoder

csv.field_size_limit(1 << 24)


def column(path: str, name: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if name not in header:
            raise SystemExit(f"error: {path} has no column {name!r} (header: {header})")
        index = header.index(name)
        return [row[index] for row in reader if len(row) > index and row[index].strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", required=True, type=Path, help="folder with tokenizer.json (and config.json)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("sources", nargs="+", help="FILE.tsv:COLUMN")
    args = p.parse_args(argv)
    if (args.folder / "openvino_model.xml").is_file():
        fast = Tier(args.folder, max_length=args.max_length).encoder
    else:
        fast = TextEncoder(args.folder / TOKENIZER_FILE, args.max_length, native=True)
    reference = TextEncoder(args.folder / TOKENIZER_FILE, args.max_length)
    print(f"{args.folder}: fast path {fast.backend}, pad id {fast.pad_id}, single-text template {fast.spec.single_bounds}")
    failed = False
    for source in args.sources:
        path, _, name = source.rpartition(":")
        texts = column(path, name)
        got, want = fast.encode(texts), reference.encode(texts)
        native = 0 if fast.native is None else len(texts) - len(fast.native.encode_batch(texts)[2])
        differ = [i for i, (a, b) in enumerate(zip(got, want)) if list(a.ids) != list(b.ids) or a.truncated != b.truncated]
        failed |= bool(differ)
        print(f"{path} [{name}]: {len(texts)} texts, {native} on the C++ WordPiece, {sum(e.truncated for e in want)} truncated, {len(differ)} differ" + (f" (first: {texts[differ[0]]!r})" if differ else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
