"""Tests for workbench.data.store: synthetic data only, no model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.data import store_format as st_format
from workbench.data import store_reader as st
from workbench.data.store import ActivationStore, StoreError, StoreWriter, store_size_bytes

HOOK = "blocks.0.hook_resid_post"
HOOK2 = "blocks.1.hook_mlp_out"
CTX = 8
TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


def make_data(n_ctx: int = 11, ctx: int = CTX, dims: dict[str, int] | None = None, seed: int = 0) -> dict:
    """Synthetic shard inputs. Column 0 of every activation row holds the global row index (exact in fp16
    below 2048) so row identity survives shuffling."""
    dims = dims or {HOOK: 6}
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, 50, size=(n_ctx, ctx)).astype(np.int64)
    tokens[:, 0] = 1  # BOS
    doc_ids = np.repeat(np.arange(n_ctx, dtype=np.int64)[:, None] // 2, ctx, axis=1)
    doc_ids[:, ctx // 2 :] += 1000  # two documents per context
    positions = np.tile(np.arange(ctx, dtype=np.int32), (n_ctx, 1))
    acts = {}
    for h, d in dims.items():
        a = rng.standard_normal((n_ctx * ctx, d)).astype(np.float32)
        a[:, 0] = np.arange(n_ctx * ctx)
        acts[h] = a
    return {"tokens": tokens, "doc_ids": doc_ids, "positions": positions, "acts": acts, "ctx": ctx, "dims": dims}


def writer_kwargs(data: dict, **kw) -> dict:
    out = dict(
        model_name="fake-model",
        hooks=list(data["dims"]),
        d_model=dict(data["dims"]),
        context_size=data["ctx"],
        dtype="float16",
        shard_contexts=4,
        corpus={"name": "synthetic", "n_docs": 99},
        corpus_fingerprint="abc123",
    )
    out.update(kw)
    return out


def write_shards(writer: StoreWriter, data: dict, start: int | None = None, stop: int | None = None) -> None:
    """Write shards [start, stop) of ``data`` (default: from the writer's resume point to the end)."""
    sc, ctx = writer.shard_contexts, data["ctx"]
    n = len(data["tokens"])
    n_shards = -(-n // sc)
    start = writer.n_complete_shards if start is None else start
    for i in range(start, n_shards if stop is None else stop):
        c0, c1 = i * sc, min(n, (i + 1) * sc)
        acts = {h: torch.from_numpy(a[c0 * ctx : c1 * ctx]) for h, a in data["acts"].items()}
        writer.write_shard(i, data["tokens"][c0:c1], data["doc_ids"][c0:c1], data["positions"][c0:c1], acts)


def build(path: Path, data: dict, **kw) -> ActivationStore:
    w = StoreWriter(path, **writer_kwargs(data, **kw))
    write_shards(w, data)
    return w.finalize(extra={"tokens_per_s": 123.0})


def dir_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((path / "shards").iterdir())}


def rows_of(batches) -> np.ndarray:
    return torch.cat(list(batches)).numpy()


@pytest.fixture(autouse=True)
def _fresh_verify_cache():
    st._VERIFIED.clear()
    yield
    st._VERIFIED.clear()


@pytest.fixture
def data() -> dict:
    return make_data()


@pytest.fixture
def store(tmp_path, data) -> ActivationStore:
    return build(tmp_path / "s", data)


def non_bos(data: dict, hook: str = HOOK) -> np.ndarray:
    a = data["acts"][hook]
    keep = np.arange(len(a)) % data["ctx"] != 0
    return a[keep]


# ---------------------------------------------------------------------------------------------------------
# round trip


@pytest.mark.parametrize("dtype,tdtype,rtol", [("float16", torch.float16, 1e-3), ("bfloat16", torch.bfloat16, 8e-3)])
def test_roundtrip(tmp_path, data, dtype, tdtype, rtol):
    s = build(tmp_path / "s", data, dtype=dtype)
    s = ActivationStore.open(tmp_path / "s", verify="full")
    assert (s.dtype, s.model_name, s.hooks, s.d_model, s.context_size) == (dtype, "fake-model", [HOOK], 6, CTX)
    assert s.n_contexts == 11 and s.n_tokens == 88 and s.n_shards == 3
    assert s.manifest["complete"] is True and s.manifest["extra"]["tokens_per_s"] == 123.0
    assert s.manifest["corpus_fingerprint"] == "abc123" and "torch" in s.manifest["versions"]
    tok = s.token_ids()
    assert tok.dtype == np.int32 and np.array_equal(tok, data["tokens"])
    assert np.array_equal(s.doc_ids(), data["doc_ids"]) and np.array_equal(s.positions(), data["positions"])
    src = data["acts"][HOOK]
    allrows = rows_of(s.iter_batches(1000, shuffle=False, exclude_bos=False, drop_last=False))
    exact = torch.from_numpy(src).to(tdtype).float().numpy()
    assert np.array_equal(allrows, exact)  # bit-exact to the dtype conversion
    np.testing.assert_allclose(allrows[:, 1:], src[:, 1:], rtol=rtol, atol=rtol)
    batches = list(s.iter_batches(8, shuffle=False, exclude_bos=False))  # whole, contiguous batches
    assert len(batches) == 11 and np.array_equal(torch.cat(batches).numpy(), exact)
    for c in (0, 5, 10):
        a = s.activations(c)
        assert a.shape == (CTX, 6) and a.dtype == torch.float32
        assert np.array_equal(a.numpy(), exact[c * CTX : (c + 1) * CTX])
    assert s.activations(3, dtype=None).dtype == tdtype
    native = next(s.iter_batches(4, shuffle=False, dtype=None))
    assert native.dtype == tdtype
    raw = np.load(tmp_path / "s" / "shards" / "00000.acts.blocks-0-hook_resid_post.npy", allow_pickle=False)
    assert raw.dtype == (np.float16 if dtype == "float16" else np.uint16)


def test_layout_and_manifest(store, tmp_path):
    root = tmp_path / "s"
    names = sorted(p.name for p in (root / "shards").iterdir())
    assert names[:4] == [
        "00000.acts.blocks-0-hook_resid_post.npy",
        "00000.doc_ids.npy",
        "00000.positions.npy",
        "00000.tokens.npy",
    ]
    assert len(names) == 12 and not any(n.endswith(".tmp") for n in names)
    m = json.loads((root / "manifest.json").read_text())
    assert m["hooks"] == [HOOK] and m["d_model"] == {HOOK: 6} and m["shard_contexts"] == 4
    assert [s["n_contexts"] for s in m["shards"]] == [4, 4, 3]
    rec = m["shards"][2]["files"]["shards/00002.tokens.npy"]
    assert rec["size"] == (root / "shards/00002.tokens.npy").stat().st_size and len(rec["sha256"]) == 64
    assert np.load(root / "shards/00002.tokens.npy", mmap_mode="r", allow_pickle=False).shape == (3, CTX)
    summ = store.summary()
    assert summ["n_tokens"] == 88 and summ["size_bytes"] == store_size_bytes(root) > 0
    assert summ["hooks"] == [HOOK] and summ["dtype"] == "float16"


def test_accepts_3d_acts_and_numpy(tmp_path, data):
    w = StoreWriter(tmp_path / "s", **writer_kwargs(data, shard_contexts=11))
    a3 = data["acts"][HOOK].reshape(11, CTX, 6)  # numpy, 3-D
    w.write_shard(0, torch.from_numpy(data["tokens"]), data["doc_ids"], data["positions"], {HOOK: a3})
    s = w.finalize()
    assert np.array_equal(s.activations(2).numpy()[:, 0], np.arange(16, 24))


# ---------------------------------------------------------------------------------------------------------
# streaming


def test_sequential_order(store, data):
    got = rows_of(store.iter_batches(7, shuffle=False))
    exp = non_bos(data)
    n = len(exp) // 7 * 7
    assert got.shape == (n, 6)
    assert np.array_equal(got[:, 0], exp[:n, 0])
    tail = rows_of(store.iter_batches(7, shuffle=False, drop_last=False))
    assert np.array_equal(tail[:, 0], exp[:, 0])
    assert store.n_rows() == len(exp) == 77 and store.n_rows(exclude_bos=False) == 88


def test_shuffled_is_seeded_permutation(tmp_path):
    data = make_data(n_ctx=37, ctx=16)
    s = build(tmp_path / "s", data, shard_contexts=5)
    ids = lambda b: np.rint(rows_of(b)[:, 0]).astype(int)
    a = ids(s.iter_batches(64, seed=3, drop_last=False, buffer_shards=2))
    b = ids(s.iter_batches(64, seed=3, drop_last=False, buffer_shards=2))
    c = ids(s.iter_batches(64, seed=4, drop_last=False, buffer_shards=2))
    expected = np.array([r for r in range(37 * 16) if r % 16 != 0])
    assert np.array_equal(np.sort(a), expected) and np.array_equal(np.sort(c), expected)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, expected)
    # batches mix shards (shard = row // (5 * 16))
    first = a[:64] // 80
    assert len(set(first.tolist())) > 1
    dropped = ids(s.iter_batches(64, seed=3, buffer_shards=2))
    assert len(dropped) == len(expected) // 64 * 64 and np.array_equal(dropped, a[: len(dropped)])
    # whole iteration shape/dtype
    batch = next(s.iter_batches(64))
    assert batch.shape == (64, 6) and batch.dtype == torch.float32


def test_exclude_bos_toggle(tmp_path, store, data):
    ids = lambda b: np.rint(rows_of(b)[:, 0]).astype(int)
    with_bos = ids(store.iter_batches(8, exclude_bos=False, drop_last=False))
    assert np.array_equal(np.sort(with_bos), np.arange(88))
    no_bos = ids(store.iter_batches(8, drop_last=False))
    assert not np.any(no_bos % CTX == 0) and len(no_bos) == 77
    # a store without BOS never drops position 0
    s2 = build(tmp_path / "nobos", data, prepend_bos=False)
    assert len(ids(s2.iter_batches(8, drop_last=False))) == 88


@pytest.mark.parametrize("shuffle", [False, True])
def test_start_tokens_resume(tmp_path, shuffle):
    data = make_data(n_ctx=23, ctx=10)
    s = build(tmp_path / "s", data, shard_contexts=3)
    kw = dict(shuffle=shuffle, seed=7, buffer_shards=2, drop_last=False)
    full = rows_of(s.iter_batches(16, **kw))
    assert len(full) == 23 * 9
    for start in (0, 1, 16, 27, 54, 55, 100, len(full) - 1):
        tail = rows_of(s.iter_batches(16, start_tokens=start, **kw))
        assert np.array_equal(tail, full[start:]), start
    # a trainer that consumed k batches resumes with the exact next batches
    full_b = list(s.iter_batches(16, **{**kw, "drop_last": True}))
    resumed = list(s.iter_batches(16, start_tokens=5 * 16, **{**kw, "drop_last": True}))
    assert len(resumed) == len(full_b) - 5
    assert all(torch.equal(x, y) for x, y in zip(resumed, full_b[5:]))
    # max_tokens caps after start
    part = rows_of(s.iter_batches(16, start_tokens=20, max_tokens=50, **kw))
    assert np.array_equal(part, full[20:70])
    assert list(s.iter_batches(16, start_tokens=10_000, **kw)) == []


def test_start_tokens_skips_reading(tmp_path):
    data = make_data(n_ctx=12, ctx=8)
    s = build(tmp_path / "s", data, shard_contexts=2)
    # corrupt shard 0; sequential iteration starting beyond it must not read it
    p = tmp_path / "s/shards/00000.acts.blocks-0-hook_resid_post.npy"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))
    got = rows_of(s.iter_batches(4, shuffle=False, start_tokens=14, drop_last=False))
    assert np.rint(got[0, 0]) == 17
    with pytest.raises(StoreError, match="00000.acts"):
        list(s.iter_batches(4, shuffle=False))


def test_two_hooks(tmp_path):
    data = make_data(dims={HOOK: 6, HOOK2: 10})
    s = build(tmp_path / "s", data)
    assert s.hooks == [HOOK, HOOK2] and s.d_in(HOOK) == 6 and s.d_in(HOOK2) == 10
    with pytest.raises(StoreError, match="d_in"):
        s.d_model
    with pytest.raises(ValueError, match="several hooks"):
        s.iter_batches(4)  # validated eagerly, before the first next()
    with pytest.raises(ValueError, match="not in this store"):
        s.iter_batches(4, hook="blocks.9.hook_resid_pre")
    for h, d in data["dims"].items():
        got = rows_of(s.iter_batches(5, hook=h, shuffle=False, drop_last=False))
        exp = torch.from_numpy(non_bos(data, h)).half().float().numpy()
        assert got.shape == (77, d) and np.array_equal(got, exp)
        assert s.activations(4, hook=h).shape == (CTX, d)
    assert (tmp_path / "s/shards/00001.acts.blocks-1-hook_mlp_out.npy").exists()


def test_hook_file_names():
    assert st_format.hook_file_name("blocks.6.hook_resid_post") == "blocks-6-hook_resid_post"
    assert st_format._hook_files(["a.b", "a-b", "a_b"]) == {"a.b": "a-b", "a-b": "a-b--1", "a_b": "a_b"}


# ---------------------------------------------------------------------------------------------------------
# integrity


def test_truncated_shard_detected_at_open(store, tmp_path):
    p = tmp_path / "s/shards/00001.acts.blocks-0-hook_resid_post.npy"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(StoreError, match=r"00001\.acts\.blocks-0-hook_resid_post\.npy.*truncated"):
        ActivationStore.open(tmp_path / "s")
    ActivationStore.open(tmp_path / "s", verify="none")  # explicitly unchecked


def test_missing_shard_detected_at_open(store, tmp_path):
    (tmp_path / "s/shards/00002.positions.npy").unlink()
    with pytest.raises(StoreError, match=r"00002\.positions\.npy.*missing"):
        ActivationStore.open(tmp_path / "s")


def flip_byte(p: Path, offset: int = -3) -> None:
    raw = bytearray(p.read_bytes())
    raw[offset] ^= 0x40
    p.write_bytes(bytes(raw))


def test_flipped_byte_detected(store, tmp_path):
    p = tmp_path / "s/shards/00001.acts.blocks-0-hook_resid_post.npy"
    flip_byte(p)
    s = ActivationStore.open(tmp_path / "s")  # same size: passes the cheap check
    with pytest.raises(StoreError, match=r"00001\.acts\.blocks-0-hook_resid_post\.npy.*checksum"):
        s.verify()
    with pytest.raises(StoreError, match=r"00001\.acts.*checksum"):
        list(s.iter_batches(8, shuffle=True))
    with pytest.raises(StoreError, match=r"00001\.acts.*checksum"):
        list(s.iter_batches(8, shuffle=False))
    with pytest.raises(StoreError, match=r"00001\.acts.*checksum"):
        s.activations(5)
    s.activations(1)  # shard 0 is fine
    with pytest.raises(StoreError, match=r"00001\.acts.*checksum"):
        ActivationStore.open(tmp_path / "s", verify="full")
    unchecked = ActivationStore.open(tmp_path / "s", verify="none")
    assert len(rows_of(unchecked.iter_batches(8, drop_last=False))) == 77


def test_flipped_token_byte_detected_lazily(store, tmp_path):
    flip_byte(tmp_path / "s/shards/00002.tokens.npy")
    s = ActivationStore.open(tmp_path / "s")
    s.context(0)
    with pytest.raises(StoreError, match=r"00002\.tokens\.npy"):
        s.context(9)
    with pytest.raises(StoreError, match=r"00002\.tokens\.npy"):
        s.token_ids()


def test_lazy_verification_cached(store, tmp_path, monkeypatch):
    calls = []
    real = st._sha256_file
    monkeypatch.setattr(st, "_sha256_file", lambda p: calls.append(p) or real(p))
    s = ActivationStore.open(tmp_path / "s")
    list(s.iter_batches(8))
    list(s.iter_batches(8, seed=1))
    s.activations(0)
    assert calls == []  # activations were hashed while being read, once
    s.context(0)
    s.context(1)
    assert len(calls) == 3  # tokens/doc_ids/positions of shard 0, once each


# ---------------------------------------------------------------------------------------------------------
# crash & resume


def test_resume_after_simulated_crash_is_byte_identical(tmp_path, data, monkeypatch):
    ref = build(tmp_path / "ref", data)
    root = tmp_path / "crash"
    w = StoreWriter(root, **writer_kwargs(data))
    write_shards(w, data, 0, 1)

    def die(self, record):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(StoreWriter, "_append_record", die)
        with pytest.raises(KeyboardInterrupt):
            write_shards(w, data, 1, 2)  # shard 1's files are written, its record is not
    w.close()
    assert (root / "shards/00001.tokens.npy").exists()
    (root / "shards/.00002.tokens.npy.tmp").write_bytes(b"partial garbage")
    (root / "shards/00002.doc_ids.npy").write_bytes(b"leftover from a crashed shard")
    with pytest.raises(StoreError, match="did not finish"):
        ActivationStore.open(root)
    partial = ActivationStore.open(root, allow_incomplete=True)
    assert partial.n_shards == 1 and partial.n_contexts == 4

    w2 = StoreWriter(root, **writer_kwargs(data))
    assert w2.n_complete_shards == 1 and w2.n_complete_contexts == 4
    assert not (root / "shards/.00002.tokens.npy.tmp").exists()
    assert not (root / "shards/00001.tokens.npy").exists()
    with pytest.raises(ValueError, match="next index is 1"):
        write_shards(w2, data, 2, 3)
    write_shards(w2, data)
    s = w2.finalize()
    assert dir_bytes(root) == dir_bytes(tmp_path / "ref")
    assert s.manifest["shards"] == ref.manifest["shards"]
    assert len(s.manifest["resumed"]) == 1
    s.verify()


def test_torn_progress_line_is_dropped(tmp_path, data):
    root = tmp_path / "s"
    w = StoreWriter(root, **writer_kwargs(data))
    write_shards(w, data, 0, 2)
    w.close()
    with open(root / "progress.jsonl", "ab") as f:
        f.write(b'{"index": 2, "n_contexts": 3, "fil')  # kill -9 mid-append
    w2 = StoreWriter(root, **writer_kwargs(data))
    assert w2.n_complete_shards == 2
    write_shards(w2, data)
    assert w2.finalize().n_contexts == 11
    assert dir_bytes(root) == dir_bytes(build(tmp_path / "ref", data).path)


_KILL_SCRIPT = r"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
from test_store import make_data, writer_kwargs, write_shards
from workbench.data import store_writer as st_writer

mode, n = sys.argv[2], int(sys.argv[3])
if mode == "record":  # die after shard n's files are renamed into place, before its record
    real = st_writer.StoreWriter._append_record
    def append(self, rec):
        if rec.index == n:
            os.kill(os.getpid(), signal.SIGKILL)
        real(self, rec)
    st_writer.StoreWriter._append_record = append
else:  # die mid-shard: shard n's tokens renamed, its doc_ids still a temporary file
    from workbench.core import persist
    real_replace = os.replace
    def replace(src, dst):
        if Path(src).name == ".%05d.doc_ids.npy.tmp%d" % (n, os.getpid()):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    persist.os.replace = replace
data = make_data(n_ctx=11)
w = st_writer.StoreWriter(sys.argv[1], **writer_kwargs(data, dtype="bfloat16"))
write_shards(w, data)
w.finalize()
"""


@pytest.mark.parametrize("mode,n", [("record", 1), ("file", 2)])
def test_resume_after_real_kill9(tmp_path, mode, n):
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT.format(tests=str(TESTS_DIR)))
    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(script), str(root), mode, str(n)], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    if mode == "record":
        assert (root / f"shards/{n:05d}.tokens.npy").exists()
    else:
        assert list((root / "shards").glob(f".{n:05d}.doc_ids.npy.tmp*")), "the kill should leave a temporary file"
    data = make_data(n_ctx=11)
    w = StoreWriter(root, **writer_kwargs(data, dtype="bfloat16"))
    assert w.n_complete_shards == n
    write_shards(w, data)
    w.finalize().verify()
    ref = build(tmp_path / "ref", data, dtype="bfloat16")
    assert dir_bytes(root) == dir_bytes(ref.path)


def test_incompatible_resume_refused(tmp_path, data):
    root = tmp_path / "s"
    w = StoreWriter(root, **writer_kwargs(data))
    write_shards(w, data, 0, 1)
    w.close()
    for change in [
        {"d_model": {HOOK: 7}},
        {"hooks": [HOOK2], "d_model": 6},
        {"corpus_fingerprint": "other"},
        {"dtype": "bfloat16"},
        {"shard_contexts": 8},
        {"model_name": "other-model"},
    ]:
        with pytest.raises(StoreError, match=r"incompatible.*--out"):
            StoreWriter(root, **writer_kwargs(data, **change))
    # compatible: the extra dict may differ
    w2 = StoreWriter(root, **writer_kwargs(data, extra={"note": "resumed"}))
    assert w2.n_complete_shards == 1
    w2.close()


def test_writer_refuses_foreign_dir_and_second_writer(tmp_path, data):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hi")
    with pytest.raises(StoreError, match="not an activation store"):
        StoreWriter(foreign, **writer_kwargs(data))
    w = StoreWriter(tmp_path / "s", **writer_kwargs(data))
    with pytest.raises(StoreError, match="another writer"):
        StoreWriter(tmp_path / "s", **writer_kwargs(data))
    w.close()


def test_reopen_complete_store(store, tmp_path, data):
    w = StoreWriter(tmp_path / "s", **writer_kwargs(data))
    assert w.is_complete and w.n_complete_shards == 3
    with pytest.raises(StoreError, match="already complete"):
        write_shards(w, data, 3, 4)
    assert w.finalize().n_contexts == 11


# ---------------------------------------------------------------------------------------------------------
# validation


def test_write_shard_validation(tmp_path, data):
    w = StoreWriter(tmp_path / "s", **writer_kwargs(data))
    t, dc, p = data["tokens"][:4], data["doc_ids"][:4], data["positions"][:4]
    a = torch.from_numpy(data["acts"][HOOK][: 4 * CTX])
    with pytest.raises(ValueError, match=r"blocks\.0\.hook_resid_post.*expected d_model=6, got 5"):
        w.write_shard(0, t, dc, p, {HOOK: a[:, :5]})
    with pytest.raises(ValueError, match=r"expected shape \[4, 8, 6\]"):
        w.write_shard(0, t, dc, p, {HOOK: torch.zeros(4, CTX, 5)})
    with pytest.raises(ValueError, match="expected 32 rows"):
        w.write_shard(0, t, dc, p, {HOOK: a[:31]})
    with pytest.raises(ValueError, match="missing"):
        w.write_shard(0, t, dc, p, {})
    with pytest.raises(ValueError, match="tokens must be"):
        w.write_shard(0, t[:, :5], dc, p, {HOOK: a})
    with pytest.raises(ValueError, match="doc_ids shape"):
        w.write_shard(0, t, dc[:3], p, {HOOK: a})
    with pytest.raises(ValueError, match="integer"):
        w.write_shard(0, t.astype(np.float32), dc, p, {HOOK: a})
    with pytest.raises(ValueError, match="next index is 0"):
        w.write_shard(1, t, dc, p, {HOOK: a})
    with pytest.raises(ValueError, match="bfloat16"):
        w.write_shard(0, t, dc, p, {HOOK: a * 1e6})  # overflows fp16
    with pytest.raises(ValueError, match="NaN"):
        w.write_shard(0, t, dc, p, {HOOK: a * float("nan")})
    assert w.n_complete_shards == 0
    w.write_shard(0, t[:2], dc[:2], p[:2], {HOOK: a[: 2 * CTX]})  # a short shard must be the last
    with pytest.raises(ValueError, match="must be the last"):
        w.write_shard(1, t, dc, p, {HOOK: a})
    w.close()


def test_bfloat16_stores_large_values(tmp_path, data):
    big = {**data, "acts": {HOOK: data["acts"][HOOK] * 1e6}}
    s = build(tmp_path / "s", big, dtype="bf16")
    assert s.dtype == "bfloat16" and float(s.activations(0).abs().max()) > 1e6


def test_context_indices(store, data):
    c = store.context(5)
    assert np.array_equal(c["tokens"], data["tokens"][5]) and c["index"] is None
    assert np.array_equal(c["doc_ids"], data["doc_ids"][5]) and np.array_equal(c["positions"], data["positions"][5])
    w = store.context(9, position=1, window=(3, 2))
    assert (w["start"], w["stop"], w["index"]) == (0, 4, 1)
    assert np.array_equal(w["tokens"], data["tokens"][9, 0:4])
    w = store.context(9, position=6, window=(2, 5))
    assert (w["start"], w["stop"], w["index"]) == (4, 8, 2)
    for bad in (-1, 11, 1.5, True):
        with pytest.raises(ValueError):
            store.context(bad)
    with pytest.raises(ValueError, match="position"):
        store.context(0, position=CTX)
    with pytest.raises(ValueError, match="window"):
        store.context(0, position=2, window=(-1, 2))
    with pytest.raises(ValueError):
        store.activations(11)
    assert store.context(np.int64(10))["context_idx"] == 10


def test_open_errors(tmp_path, data):
    with pytest.raises(StoreError, match="no such directory"):
        ActivationStore.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"not an activation store.*manifest\.json"):
        ActivationStore.open(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"manifest\.json is corrupt or unreadable.*harvest again"):
        ActivationStore.open(tmp_path / "bad")
    build(tmp_path / "s", data)
    assert ActivationStore.open(tmp_path / "s/manifest.json").n_contexts == 11
    with pytest.raises(ValueError, match="verify"):
        ActivationStore.open(tmp_path / "s", verify="sometimes")


# ---------------------------------------------------------------------------------------------------------
# decoding & stats


class FakeTokenizer:
    vocab = {i: f"w{i}" for i in range(100)} | {1: "<bos>"}

    def decode(self, ids):
        return " ".join(self.vocab[int(i)] for i in ids)

    def convert_ids_to_tokens(self, ids):
        return ["▁" + self.vocab[int(i)] for i in ids]


class DecodeOnlyTokenizer:
    def decode(self, ids):
        return "".join(f"<{int(i)}>" for i in ids)


def test_text(store, data):
    row = data["tokens"][3]
    out = store.text(3, 5, FakeTokenizer(), before=2, after=1)
    assert out["index"] == 2
    assert out["token"] == f"w{row[5]}"
    assert out["before"] == f"w{row[3]} w{row[4]}" and out["after"] == f"w{row[6]}"
    assert out["tokens"] == [f"▁w{t}" for t in row[3:7]]
    edge = store.text(3, 0, FakeTokenizer())
    assert edge["before"] == "" and edge["token"] == "<bos>" and edge["index"] == 0 and len(edge["tokens"]) == 5
    d = store.text(3, 7, DecodeOnlyTokenizer(), before=10, after=4)
    assert d["tokens"] == [f"<{t}>" for t in row] and d["after"] == "" and d["index"] == 7
    same = store.text(3, 5, FakeTokenizer(), before=10, after=4, same_doc=True)
    assert same["index"] == 1 and len(same["tokens"]) == 4  # second document starts at position 4


def test_norm_stats(store, data):
    ns = store.norm_stats(max_tokens=50)
    x = torch.from_numpy(non_bos(data)[:50]).half().double()
    norms = x.norm(dim=1)
    assert ns["n"] == 50
    assert ns["mean"] == pytest.approx(float(norms.mean()), rel=1e-5)
    assert ns["max"] == pytest.approx(float(norms.max()), rel=1e-5)
    assert ns["median"] == pytest.approx(float(norms.median()), rel=1e-5)
    assert ns["mean_vector_norm"] == pytest.approx(float(x.mean(0).norm()), rel=1e-5)
