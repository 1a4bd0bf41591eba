"""Building a Qdrant Edge shard's HNSW index in a child process, so the serving process never pauses for it.

`EdgeShard.optimize()` holds the interpreter lock for the whole build (measured: a Python thread ticking every
millisecond ran twice during a 16 s build of 30k points), so building in the process that serves FindSimilar
stops every request for seconds at 20k points and minutes at 300k. The EdgeStore (edge.py) therefore builds
on a copy:

1. under its write lock (a fraction of a second: the shard is flushed and its folder copied), it starts a
   journal of the collection's writes;
2. a child process (`python -m shared.vectorstore.edge_build FOLDER`, niced so that serving keeps the cores'
   priority) loads the copy, builds the index and closes it; searches and writes go on against the original;
3. under the write lock again, the built copy is loaded, the journal replayed onto it, and the collection's
   meta.json is pointed at it (atomic rename); the old shard folder is removed. A crash at any step leaves
   meta.json naming the old folder or the new complete one; unreferenced folders are removed on open.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import qdrant_edge as qe

CHILD_NICE = 10  # below the serving threads: the build may take longer, a search must not
BUILD_TIMEOUT_S = 3600.0


class BuildFailed(RuntimeError):
    """The child process could not build the index (the collection keeps serving exactly, unindexed)."""


class ChildBuild:
    """The index build of the (flushed, unopened) shard copy in `folder`, running in a child process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process = subprocess.Popen([sys.executable, "-m", __name__, str(folder)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)

    def wait(self, timeout_s: float = BUILD_TIMEOUT_S) -> None:
        """Wait for the build without holding the interpreter lock; BuildFailed when it did not finish."""
        try:
            _, errors = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise BuildFailed(f"index build of {self.folder.name} took over {timeout_s:.0f}s") from None
        if self.process.returncode != 0:
            raise BuildFailed(f"index build of {self.folder.name} exited with {self.process.returncode}: "
                              f"{(errors or '').strip()[-500:]}")

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m shared.vectorstore.edge_build SHARD_FOLDER", file=sys.stderr)
        return 2
    os.nice(CHILD_NICE)
    shard = qe.EdgeShard.load(argv[1])
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
