"""Fail when a file tracked by git is larger than a limit (default 1 MB).

Usage: python3 .ci/check_file_sizes.py [--limit BYTES] [REPO]

Sizes are those of the blobs in git's index (what a commit would hold), so a
large file is caught as soon as it is staged, whatever the work tree holds.
Run by .ci/run; exit 1 lists the offending paths with their sizes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

LIMIT_BYTES = 1_000_000


def tracked_sizes(repo: str) -> list[tuple[int, str]]:
    """``(size in bytes, path)`` of every blob in the index (submodules are skipped)."""
    listing = subprocess.run(
        ["git", "-C", repo, "ls-files", "--stage", "-z"], check=True, capture_output=True
    ).stdout.decode()
    entries = []  # (object id, path)
    for record in filter(None, listing.split("\0")):
        meta, path = record.split("\t", 1)
        mode, oid, _stage = meta.split()
        if mode != "160000":  # a submodule's commit, not a file
            entries.append((oid, path))
    if not entries:
        return []
    answer = subprocess.run(
        ["git", "-C", repo, "cat-file", "--batch-check=%(objectsize)"],
        input="".join(f"{oid}\n" for oid, _ in entries).encode(),
        check=True,
        capture_output=True,
    ).stdout.decode()
    sizes = [int(line) for line in answer.split()]
    return [(size, path) for size, (_, path) in zip(sizes, entries, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", nargs="?", default=".")
    parser.add_argument("--limit", type=int, default=LIMIT_BYTES, help="bytes (default 1 MB)")
    args = parser.parse_args(argv)
    big = sorted((s, p) for s, p in tracked_sizes(args.repo) if s > args.limit)
    for size, path in big:
        print(f"check_file_sizes: {path}: {size / 1e6:.1f} MB tracked", file=sys.stderr)
    if big:
        print(
            f"check_file_sizes: {len(big)} tracked file(s) over {args.limit:,} bytes: "
            "keep data, wheels and build outputs out of git (git rm --cached)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
