"""``items.jsonl`` as a store of chunks: which chunks and grid steps it holds in full, the file in
plan order, and one chunk appended at a time.

A chunk is a fixed range of one task's items; its records at one grid step's norms are appended
together (O_APPEND, so processes never interleave), and a torn line or a step cut short by a crash
is dropped and computed again on resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from repe_tradeoff.runs.jsonio import atomic_write, norm_key

ChunkKey = tuple[str, int]  # (task, chunk index)
Done = dict[ChunkKey, dict[int, dict[tuple, bytes]]]  # chunk → grid step → (point, item) → line


def point_key(r) -> float | tuple[float, ...]:
    """A grid point as a key: a norm, or a joint sweep's tuple of norms, rounded as in the files."""
    return tuple(norm_key(x) for x in r) if isinstance(r, (tuple, list)) else norm_key(r)


def record_point(rec: dict, names: list[str]):
    """The grid point of an items.jsonl record (a joint record names its norms by vector)."""
    return point_key([rec["norms"][n] for n in names]) if names else norm_key(rec["norm"])


def whole_records(run_dir: Path) -> list[dict]:
    """The records of ``items.jsonl`` as they stand, a torn line left out (the sweep recomputes it)."""
    path = Path(run_dir) / "items.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def complete_units(path: Path, chunk_ids: dict[ChunkKey, list[int]], units: list[set], names: list[str]) -> Done:
    """Per chunk, the grid steps whose records ``items.jsonl`` holds in full, each as its lines.

    Chunks may stand in any order (several processes append to one file)."""
    if not path.exists():
        return {}
    unit_of = {r: u for u, unit in enumerate(units) for r in unit}
    members = {key: {json.dumps(i) for i in ids} for key, ids in chunk_ids.items()}
    groups: dict[tuple[ChunkKey, int], dict[tuple, bytes]] = {}
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            rec = json.loads(line)
            key, r, item = (rec["task"], int(rec["chunk"])), record_point(rec, names), json.dumps(rec["item"])
        except (ValueError, KeyError, TypeError):
            continue
        if line.endswith(b"\n") and key in members and r in unit_of and item in members[key]:
            groups.setdefault((key, unit_of[r]), {}).setdefault((r, item), line)
    done: Done = {}
    for (key, u), lines in groups.items():
        if len(lines) == len(chunk_ids[key]) * len(units[u]):
            done.setdefault(key, {})[u] = lines
    return done


def write_in_plan_order(path: Path, done: Done, chunk_ids: dict[ChunkKey, list[int]], norms: list) -> None:
    """Each chunk's lines as a fresh run writes them: norm-major in grid order, items in order."""
    column = {point_key(r): i for i, r in enumerate(norms)}
    parts = []
    for key, ids in chunk_ids.items():
        position = {json.dumps(i): j for j, i in enumerate(ids)}
        lines = {k: v for unit in done.get(key, {}).values() for k, v in unit.items()}
        parts += [lines[k] for k in sorted(lines, key=lambda k: (column[k[0]], position[k[1]]))]
    data = b"".join(parts)
    if not path.exists() or path.read_bytes() != data:
        atomic_write(path, data.decode("utf-8"))


def replace_records(path: Path, fresh: dict[tuple[str, float, str], dict]) -> None:
    """Rewrite ``items.jsonl`` with the records of ``fresh`` (keyed by task, norm key and the item as
    JSON) in place of the ones it holds; every line keeps its place."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out = []
    for line in lines:
        rec = json.loads(line)
        key = (rec.get("task"), norm_key(rec["norm"]), json.dumps(rec.get("item")))
        out.append(json.dumps(fresh[key], sort_keys=True) + "\n" if key in fresh else line)
    atomic_write(path, "".join(out))


class ChunkAppender:
    """Appends one chunk's records per call to ``items.jsonl``, each append flushed to disk."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Callable[[Iterable[dict], int], None]:
        self.file = open(self.path, "ab")
        return self.append

    def append(self, records: Iterable[dict], chunk: int) -> None:
        text = "".join(json.dumps({**rec, "chunk": chunk}, sort_keys=True) + "\n" for rec in records)
        self.file.write(text.encode())  # one chunk, one append (O_APPEND: processes never interleave)
        self.file.flush()
        os.fsync(self.file.fileno())

    def __exit__(self, *exc) -> None:
        self.file.close()
