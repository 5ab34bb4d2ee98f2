"""GGUF files converted once to float32 safetensors folders, cached by content hash.

De-quantising a ``.gguf`` file takes tens of seconds; loading a safetensors folder takes about
one. Every ``.gguf`` model (the embedded default included) is therefore converted once into
``cache_dir()/gguf/<stem>-<sha256[:16]>/``. Layout of that folder:

* ``gguf/index.json`` maps a file's absolute path, size and mtime to its SHA-256, so that a
  second load of an unchanged file does not read it to hash it again;
* each entry is written to a temporary folder and renamed into place, with a marker file
  (``.complete.json``: the hash and the size of every file) written last; an entry whose marker
  is missing or disagrees with the folder is rebuilt. Two processes converting the same file
  both finish; the second to rename keeps the first one's folder and discards its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from repe_tradeoff.runs.processes import pid_alive

log = logging.getLogger(__name__)

MARKER = ".complete.json"
FORMAT = 1
SECONDS_PER_MB = 0.25  # measured: the embedded 98 MB Q4_1 file takes about 25 s of CPU time


class CacheUnwritable(OSError):
    """The cache folder cannot be created or written."""


def cache_dir() -> Path:
    """Where converted models live: $REPE_TRADEOFF_CACHE, else $XDG_CACHE_HOME/repe-tradeoff."""
    if os.environ.get("REPE_TRADEOFF_CACHE"):
        return Path(os.environ["REPE_TRADEOFF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "repe-tradeoff"


def gguf_cache_dir() -> Path:
    return cache_dir() / "gguf"


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the hash index


def _index_path() -> Path:
    return gguf_cache_dir() / "index.json"


def _read_index() -> dict:
    try:
        index = json.loads(_index_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged: it only saves hashing, so start afresh
        return {}
    return index if isinstance(index, dict) else {}


def content_hash(path: Path) -> str:
    """The file's SHA-256, read from the index when its size and mtime are those recorded."""
    key = str(path.resolve())
    stat = path.stat()
    known = _read_index().get(key)
    if isinstance(known, dict) and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
        sha = known.get("sha256")
        if isinstance(sha, str) and len(sha) == 64:
            return sha
    sha = file_sha256(path)
    _remember(key, stat.st_size, stat.st_mtime_ns, sha)
    return sha


def _remember(key: str, size: int, mtime_ns: int, sha: str) -> None:
    from repe_tradeoff.runs import atomic_write

    index = _read_index()  # re-read: another process may have added entries meanwhile
    index[key] = {"size": size, "mtime_ns": mtime_ns, "sha256": sha}
    try:
        _index_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write(_index_path(), json.dumps(index, indent=1, sort_keys=True) + "\n")
    except OSError as err:
        raise CacheUnwritable(f"cannot write {_index_path()}: {err}") from err


# --------------------------------------------------------------------------- cache entries


def entry_dir(path: Path, sha: str) -> Path:
    return gguf_cache_dir() / f"{path.stem}-{sha[:16]}"


def is_complete(folder: Path, sha: str) -> bool:
    """The marker exists, names this hash, and every file it lists is there with its size."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        if marker.get("format") != FORMAT or marker.get("sha256") != sha or "config.json" not in files:
            return False
        return all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write_marker(folder: Path, sha: str, source: Path) -> None:
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MARKER}
    marker = {"format": FORMAT, "sha256": sha, "source": source.name, "files": files}
    with open(folder / MARKER, "w", encoding="utf-8") as f:
        f.write(json.dumps(marker, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())


def convert_gguf(path: Path, out: Path) -> None:
    """De-quantise ``path`` into ``out``: float32 safetensors weights, config and tokenizer.

    save_pretrained refuses a GGUF-quantised model, so the model is rebuilt from its config
    (without ``quantization_config``) and given the de-quantised state dict.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, low_cpu_mem_usage=True
    )
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    clean.generation_config = model.generation_config
    del model
    clean.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def converted_dir(path: Path) -> Path:
    """The cached safetensors folder of the GGUF file ``path``, converting it first if needed."""
    path = Path(path)
    sha = content_hash(path)
    target = entry_dir(path, sha)
    if is_complete(target, sha):
        return target
    _remove_stale_temporaries(target)
    estimate = max(5, round(path.stat().st_size / 1e6 * SECONDS_PER_MB))
    log.info("converting %s once to a cached safetensors copy in %s, ~%d s", path.name, target, estimate)
    tmp = target.with_name(f".{target.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            tmp.mkdir(parents=True)
        except OSError as err:
            raise CacheUnwritable(f"cannot create {tmp.parent}: {err}") from err
        start = time.perf_counter()
        convert_gguf(path, tmp)
        _write_marker(tmp, sha, path)
        _install(tmp, target, sha)
        log.debug("converted %s in %.1f s", path.name, time.perf_counter() - start)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _install(tmp: Path, target: Path, sha: str) -> None:
    """Rename ``tmp`` to ``target``; keep a complete folder another process put there first."""
    for _ in range(3):
        try:
            os.rename(tmp, target)  # atomic; fails when target is a non-empty folder
            return
        except OSError:
            if is_complete(target, sha):
                return  # another process won; the caller removes tmp
            # a broken entry (an older, interrupted writer): move it aside, then retry
            aside = target.with_name(f".{target.name}.broken-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
    raise CacheUnwritable(f"cannot put the converted model in place at {target}")


def _remove_stale_temporaries(target: Path) -> None:
    """Temporary folders left by a process of this host that no longer runs."""
    prefix = f".{target.name}.tmp-{socket.gethostname()}-"
    if not target.parent.is_dir():
        return
    for tmp in target.parent.iterdir():
        if tmp.name.startswith(prefix):
            pid = tmp.name[len(prefix):].split("-")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)
