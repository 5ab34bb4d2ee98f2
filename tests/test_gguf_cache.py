"""GGUF files are converted once into a cache keyed by content hash, and the cache heals itself.

The slow tests convert a copy of the embedded GGUF file for real (once, in a module fixture) and
compare the cached model with a direct transformers load of the same file. The others replace
the de-quantisation by a stub that writes a small folder: what they test is the cache around it
(hash index, marker, temporary folder and rename), which does not depend on the weights.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repe_tradeoff.models import gguf_cache
from repe_tradeoff.models.gguf_cache import MARKER, content_hash, converted_dir, is_complete
from repe_tradeoff.models.loading import ModelError, load_model

TEXT = "The capital of France is Paris, and the capital of Italy is"


def stub_convert(calls: list | None = None, delay: float = 0.0):
    """A conversion that writes a config and a 1 kB 'weights' file naming the converting process."""

    def convert(path: Path, out: Path) -> None:
        if calls is not None:
            calls.append(path)
        time.sleep(delay)
        (out / "config.json").write_text(json.dumps({"source": path.name}))
        (out / "model.safetensors").write_bytes(b"w" * 1000)
        (out / "writer.txt").write_text(str(os.getpid()))

    return convert


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPE_TRADEOFF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_gguf(tmp_path) -> Path:
    path = tmp_path / "files" / "fake.gguf"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 64)
    return path


# --------------------------------------------------------------------------- the cache, stubbed


def test_hash_is_the_files_sha256_and_is_remembered(cache, fake_gguf, monkeypatch):
    expected = hashlib.sha256(fake_gguf.read_bytes()).hexdigest()
    assert content_hash(fake_gguf) == expected
    index = json.loads((cache / "gguf" / "index.json").read_text())
    stat = fake_gguf.stat()
    assert index[str(fake_gguf.resolve())] == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}
    hashed = []
    monkeypatch.setattr(gguf_cache, "file_sha256", lambda p, *a: hashed.append(p) or "0" * 64)
    assert content_hash(fake_gguf) == expected and hashed == []  # size and mtime match: not read again


def test_mtime_change_rehashes_but_does_not_convert(cache, fake_gguf, monkeypatch):
    calls = []
    monkeypatch.setattr(gguf_cache, "convert_gguf", stub_convert(calls))
    folder = converted_dir(fake_gguf)
    stat = fake_gguf.stat()
    os.utime(fake_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert converted_dir(fake_gguf) == folder
    assert len(calls) == 1
    index = json.loads((cache / "gguf" / "index.json").read_text())
    assert index[str(fake_gguf.resolve())]["mtime_ns"] == stat.st_mtime_ns + 5_000_000_000


def test_changed_byte_converts_again(cache, fake_gguf, monkeypatch):
    calls = []
    monkeypatch.setattr(gguf_cache, "convert_gguf", stub_convert(calls))
    first = converted_dir(fake_gguf)
    original = hashlib.sha256(fake_gguf.read_bytes()).hexdigest()
    data = bytearray(fake_gguf.read_bytes())
    data[-1] ^= 0xFF
    fake_gguf.write_bytes(bytes(data))
    second = converted_dir(fake_gguf)
    assert len(calls) == 2 and second != first
    assert second.name == f"fake-{hashlib.sha256(bytes(data)).hexdigest()[:16]}"
    assert is_complete(first, original)  # the old file's entry stays valid for its own content


def _missing_marker(folder: Path) -> None:
    (folder / MARKER).unlink()


def _truncated_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"w" * 10)


def _marker_of_another_file(folder: Path) -> None:
    marker = json.loads((folder / MARKER).read_text())
    (folder / MARKER).write_text(json.dumps({**marker, "sha256": "0" * 64}))


def _marker_not_json(folder: Path) -> None:
    (folder / MARKER).write_text('{"format": 1, "sha')


def _missing_config(folder: Path) -> None:
    (folder / "config.json").unlink()


@pytest.mark.parametrize("damage", [_missing_marker, _truncated_weights, _marker_of_another_file,
                                    _marker_not_json, _missing_config])
def test_broken_entry_is_rebuilt(cache, fake_gguf, monkeypatch, damage):
    calls = []
    monkeypatch.setattr(gguf_cache, "convert_gguf", stub_convert(calls))
    folder = converted_dir(fake_gguf)
    damage(folder)
    assert converted_dir(fake_gguf) == folder
    assert len(calls) == 2
    sha = hashlib.sha256(fake_gguf.read_bytes()).hexdigest()
    assert is_complete(folder, sha)
    assert (folder / "model.safetensors").stat().st_size == 1000
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


def test_failed_conversion_leaves_nothing_behind(cache, fake_gguf, monkeypatch):
    def failing(path, out):
        (out / "config.json").write_text("{}")
        raise ValueError("not a GGUF file")

    monkeypatch.setattr(gguf_cache, "convert_gguf", failing)
    with pytest.raises(ValueError, match="not a GGUF file"):
        converted_dir(fake_gguf)
    assert sorted(p.name for p in (cache / "gguf").iterdir()) == ["index.json"]


def test_temporaries_of_dead_processes_are_removed(cache, fake_gguf, monkeypatch):
    monkeypatch.setattr(gguf_cache, "convert_gguf", stub_convert())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    entry = gguf_cache.entry_dir(fake_gguf, content_hash(fake_gguf))
    stale = entry.with_name(f".{entry.name}.tmp-{socket.gethostname()}-{dead}-abcd1234")
    live = entry.with_name(f".{entry.name}.tmp-{socket.gethostname()}-{os.getpid()}-abcd1234")
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
    converted_dir(fake_gguf)
    assert not stale.exists() and live.exists()  # a running process's folder is left alone


def test_damaged_index_is_rebuilt(cache, fake_gguf):
    (cache / "gguf").mkdir(parents=True)
    (cache / "gguf" / "index.json").write_text("[not, json")
    assert content_hash(fake_gguf) == hashlib.sha256(fake_gguf.read_bytes()).hexdigest()
    assert str(fake_gguf.resolve()) in json.loads((cache / "gguf" / "index.json").read_text())


def _convert_in_child(path: str, results) -> None:
    results.put(str(converted_dir(Path(path))))


def test_two_processes_converting_one_file(cache, fake_gguf, monkeypatch, tmp_path):
    """Both convert at once; both end up with the same complete folder, no temporaries remain."""
    log = tmp_path / "conversions.log"

    def slow(path, out):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        stub_convert(delay=1.0)(path, out)

    monkeypatch.setattr(gguf_cache, "convert_gguf", slow)
    content_hash(fake_gguf)  # so that both children find the hash in the index
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    children = [ctx.Process(target=_convert_in_child, args=(str(fake_gguf), results)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    folders = {results.get(timeout=5) for _ in children}
    assert len(log.read_text().split()) == 2, "the two processes did not both convert"
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert is_complete(folder, content_hash(fake_gguf))
    assert (folder / "writer.txt").read_text() in log.read_text().split()
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch, fake_gguf):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("REPE_TRADEOFF_CACHE", str(blocker))
    with pytest.raises(ModelError, match="REPE_TRADEOFF_CACHE") as err:
        load_model(str(fake_gguf))
    assert "fake.gguf" in str(err.value)


# --------------------------------------------------------------------------- real conversions


@pytest.fixture(scope="module")
def two_loads(tmp_path_factory):
    """A copy of the embedded GGUF file loaded twice through a fresh cache, conversions counted."""
    from repe_tradeoff.models.loading import default_gguf_path

    try:
        source = default_gguf_path()
    except ModelError as err:
        pytest.skip(str(err))
    root = tmp_path_factory.mktemp("gguf_cache")
    path = root / "copy" / "model.gguf"
    path.parent.mkdir()
    shutil.copyfile(source, path)
    calls, times = [], []
    real = gguf_cache.convert_gguf
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPE_TRADEOFF_CACHE", str(root / "cache"))
        mp.setattr(gguf_cache, "convert_gguf", lambda p, out: calls.append(p) or real(p, out))
        loads = []
        for _ in range(2):
            start = time.perf_counter()
            loads.append(load_model(str(path)))
            times.append(time.perf_counter() - start)
            loads[-1].conversions = len(calls)
        folder = converted_dir(path)
    return {"path": path, "loads": loads, "times": times, "folder": folder}


@pytest.mark.slow
def test_second_load_reads_the_cache(two_loads):
    first, second = two_loads["loads"]
    assert (first.conversions, second.conversions) == (1, 1)
    assert (two_loads["folder"] / "model.safetensors").is_file()
    sha = hashlib.sha256(two_loads["path"].read_bytes()).hexdigest()
    assert first.revision == second.revision == f"sha256:{sha}"
    assert two_loads["folder"].name == f"model-{sha[:16]}"


@pytest.mark.slow
def test_cached_model_equals_a_direct_gguf_load(two_loads):
    """Same logits as transformers de-quantising the file itself, on one fixed input."""
    from transformers import AutoModelForCausalLM

    path = two_loads["path"]
    first, second = two_loads["loads"]
    ids = first.tokenizer(TEXT, return_tensors="pt").input_ids
    assert ids.shape[1] > 5 and torch.equal(ids, second.tokenizer(TEXT, return_tensors="pt").input_ids)
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        expected, got_first, got_second = (m(ids).logits for m in (ref, first.model, second.model))
    assert torch.equal(got_first, got_second)
    torch.testing.assert_close(got_first, expected, rtol=0, atol=1e-5)
    assert first.model.dtype == torch.float32 and not first.model.training
