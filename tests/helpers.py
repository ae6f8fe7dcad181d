"""Plain helpers shared by several test modules (no fixtures: those live in ``conftest.py``).

Test modules import them by name (``from helpers import write_store``); pytest puts ``tests/`` on ``sys.path``
because ``tests/`` has no ``__init__.py`` (rootdir-relative ``prepend`` import mode).
"""
from __future__ import annotations

import html.parser
from pathlib import Path

import numpy as np
import torch

from workbench.data.store import StoreWriter
from workbench.sae.model import SAE, SAEConfig, SAEMetadata

PLANT_HOOK = "blocks.0.hook_resid_post"

# the ``real_results`` fixture analyses this many of the session small store's 128 contexts; the rest are held out
ANALYSED_CONTEXTS = 96


# ----------------------------------------------------------------------------------------------------------------
# Planted stores and SAEs whose answer is known
# ----------------------------------------------------------------------------------------------------------------


def write_store(path: Path, acts: np.ndarray, tokens: np.ndarray, docs: np.ndarray | None = None, *,
                shard_contexts: int = 4, prepend_bos: bool = True, hook: str = PLANT_HOOK):
    """A real on-disk store (bf16) from dense activations [n_ctx, ctx, d] and token ids [n_ctx, ctx]."""
    n_ctx, ctx, d = acts.shape
    docs = np.repeat(np.arange(n_ctx)[:, None], ctx, 1) if docs is None else docs
    pos = np.tile(np.arange(ctx, dtype=np.int32), (n_ctx, 1))
    w = StoreWriter(path, model_name="planted", hooks=[hook], d_model=d, context_size=ctx, dtype="bfloat16",
                    shard_contexts=shard_contexts, prepend_bos=prepend_bos)
    for i, s in enumerate(range(0, n_ctx, shard_contexts)):
        e = s + shard_contexts
        w.write_shard(i, tokens[s:e], docs[s:e], pos[s:e], {hook: acts[s:e].reshape(-1, d).astype(np.float32)})
    return w.finalize()


def identity_sae(d: int, hook: str = PLANT_HOOK) -> SAE:
    """ReLU SAE with W_enc = W_dec = I and no biases: feature j's activation is relu(x_j)."""
    sae = SAE(SAEConfig("relu", d, d, apply_b_dec_to_input=False), SAEMetadata(model_name="planted", hook_name=hook))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


# ----------------------------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------------------------


class _Checker(html.parser.HTMLParser):
    """Fails on unbalanced div/table/span tags."""

    VOID = {"br", "meta", "hr", "img", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


def assert_balanced(fragment: str) -> None:
    c = _Checker()
    c.feed(fragment)
    c.close()
    assert c.stack == [], c.stack


class ChatStub:
    """A local OpenAI-compatible ``/v1/chat/completions`` server that answers every request with ``reply`` and
    records each one (``requests``: path, JSON body, Authorization header). Use as a context manager; ``url`` is
    the base URL (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, reply: str):
        import json
        from http.server import BaseHTTPRequestHandler, HTTPServer

        stub = self
        self.reply, self.requests = reply, []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])).decode())
                stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": stub.reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "ChatStub":
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
