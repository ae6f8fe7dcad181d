"""Corrupted variants of correct code, each with the bug's position recorded: the evaluation set of the code-error
feature (Scaling Monosemanticity's catalogue).

Rules (each a pure function ``rule(source, rng) -> Bug | None``; None when the snippet offers no place for it):

* ``typo``: a later use of an identifier (one that occurs at least twice, 4+ letters) gets two neighbouring
  interior letters swapped (``right`` -> ``rihgt``), so it names nothing that exists;
* ``wrong_name``: a later use of an identifier is replaced by a plausible name that the snippet never defines;
* ``zero_division``: ``return <expr>`` becomes ``return <expr> / 0``;
* ``type_error``: an integer literal in arithmetic becomes a string literal (``n + 1`` -> ``n + "1"``).

A :class:`Bug` keeps the corrupted text, the character span of the bug in it (``start, end``) and the span of
what stood there in the clean text (``clean_start, clean_end``); :func:`token_span` maps a span to token indices, so
activations at the bug can be compared with the clean code's at the same place. :func:`prose_typo` applies the
typo rule to English prose (the paper's negative control). :func:`snippets` cuts function definitions out of a
module (the units the rules corrupt) and :func:`repl_transcript` rewrites a snippet as an interactive session.
"""
from __future__ import annotations

import ast
import io
import keyword
import random
import re
import tokenize
from dataclasses import asdict, dataclass
from typing import Callable

__all__ = ["BUG_RULES", "Bug", "c_typo", "corrupt", "prose_typo", "repl_bug", "repl_transcript", "snippets", "swap_typo", "token_span"]


@dataclass(frozen=True)
class Bug:
    """One corrupted snippet. ``start:end`` is the bug in ``text``; ``clean_start:clean_end`` the same place in
    ``clean``."""

    kind: str
    clean: str
    text: str
    start: int
    end: int
    clean_start: int
    clean_end: int
    original: str
    replacement: str

    def to_dict(self) -> dict:
        return asdict(self)


def _names(source: str) -> list[tuple[str, int]]:
    """(identifier, character offset) of every NAME token that is not a keyword, in order."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string):
                out.append((tok.string, starts[tok.start[0] - 1] + tok.start[1]))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []
    return out


def swap_typo(word: str, rng: random.Random) -> str | None:
    """``word`` with two neighbouring interior letters swapped (different letters), or None if none can be."""
    spots = [i for i in range(1, len(word) - 2) if word[i] != word[i + 1] and word[i].isalpha() and word[i + 1].isalpha()]
    if not spots:
        return None
    i = rng.choice(spots)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _replace(kind: str, source: str, start: int, old: str, new: str, span: tuple[int, int] | None = None) -> Bug:
    text = source[:start] + new + source[start + len(old):]
    s, e = span if span is not None else (start, start + len(new))
    return Bug(kind, source, text, s, e, start, start + len(old), old, new)


def _later_uses(source: str) -> list[tuple[str, int]]:
    names = _names(source)
    seen: dict[str, int] = {}
    later = []
    for name, off in names:
        if name in seen and len(name) >= 4 and name.isidentifier() and not name.startswith("__"):
            later.append((name, off))
        seen[name] = seen.get(name, 0) + 1
    return later


def typo_rule(source: str, rng: random.Random) -> Bug | None:
    uses = _later_uses(source)
    rng.shuffle(uses)
    defined = {n for n, _ in _names(source)}
    for name, off in uses:
        new = swap_typo(name, rng)
        if new and new not in defined:
            return _replace("typo", source, off, name, new)
    return None


_WRONG = ("count", "total", "result", "value", "items", "index", "buffer", "length", "offset", "target")


def wrong_name_rule(source: str, rng: random.Random) -> Bug | None:
    uses = _later_uses(source)
    defined = {n for n, _ in _names(source)}
    free = [w for w in _WRONG if w not in defined]
    if not uses or not free:
        return None
    name, off = rng.choice(uses)
    return _replace("wrong_name", source, off, name, rng.choice(free))


_RETURN = re.compile(r"^([ \t]*return )([^\n#]+?)[ \t]*$", re.M)


def zero_division_rule(source: str, rng: random.Random) -> Bug | None:
    hits = [m for m in _RETURN.finditer(source) if m.group(2).strip() not in ("None", "True", "False", "self")
            and not m.group(2).rstrip().endswith((",", "(", "[", "{", "\\"))]
    if not hits:
        return None
    m = rng.choice(hits)
    at = m.end(2)
    text = source[:at] + " / 0" + source[at:]
    zero = at + 3
    return Bug("zero_division", source, text, zero, zero + 1, at, at, "", " / 0")


_ARITH_INT = re.compile(r"(?<=[+\-*] )([1-9][0-9]*)\b")


def type_error_rule(source: str, rng: random.Random) -> Bug | None:
    code_spans = {off for _, off in _names(source)}  # only lines that tokenize
    if not code_spans:
        return None
    hits = [m for m in _ARITH_INT.finditer(source) if "#" not in source[source.rfind("\n", 0, m.start()) + 1:m.start()]
            and source.count('"', source.rfind("\n", 0, m.start()) + 1, m.start()) % 2 == 0]
    if not hits:
        return None
    m = rng.choice(hits)
    old = m.group(1)
    return _replace("type_error", source, m.start(1), old, f'"{old}"')


BUG_RULES: dict[str, Callable[[str, random.Random], Bug | None]] = {
    "typo": typo_rule, "wrong_name": wrong_name_rule, "zero_division": zero_division_rule,
    "type_error": type_error_rule,
}


def corrupt(source: str, kind: str, seed: int = 0) -> Bug | None:
    """Apply rule ``kind`` (one of :data:`BUG_RULES`) to ``source`` with a seeded choice of place."""
    if kind not in BUG_RULES:
        raise ValueError(f"unknown bug rule {kind!r}: choose one of {', '.join(BUG_RULES)}")
    return BUG_RULES[kind](source, random.Random(f"{seed}:{kind}"))


_WORD = re.compile(r"\b[A-Za-z]{5,}\b")


def prose_typo(text: str, seed: int = 0) -> Bug | None:
    """The typo rule on prose: a word of 5+ letters after the first sentence's start gets two letters swapped."""
    rng = random.Random(f"{seed}:prose")
    words = [m for m in _WORD.finditer(text) if m.start() > 20]
    rng.shuffle(words)
    for m in words:
        new = swap_typo(m.group(), rng)
        if new:
            return _replace("prose_typo", text, m.start(), m.group(), new)
    return None


def token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """``(first, last + 1)`` of the tokens whose character spans overlap ``[start, end)`` (an empty span: the token
    that holds ``start``); ValueError when none does."""
    end = max(end, start + 1)
    hit = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not hit:
        raise ValueError(f"no token covers characters {start}..{end}: the span lies outside the tokenized text")
    return hit[0], hit[-1] + 1


def snippets(module_source: str, min_chars: int = 120, max_chars: int = 1200) -> list[str]:
    """The top-level and method function definitions of a module whose source is ``min_chars..max_chars`` long,
    dedented (so each parses on its own)."""
    try:
        tree = ast.parse(module_source)
    except SyntaxError:
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            seg = ast.get_source_segment(module_source, node)
            if seg and min_chars <= len(seg) <= max_chars:
                lines = seg.splitlines()
                indent = len(lines[-1]) - len(lines[-1].lstrip()) if len(lines) > 1 else 0
                body = [lines[0]] + [ln[indent - 4:] if indent >= 4 and ln[:indent - 4].strip() == "" else ln
                                     for ln in lines[1:]]
                out.append("\n".join(body))
    return out


def repl_transcript(snippet: str) -> str:
    """``snippet`` as typed at the interactive prompt: ``>>> `` before the first line, ``... `` before the rest."""
    lines = snippet.splitlines()
    return "\n".join([">>> " + lines[0]] + ["... " + ln for ln in lines[1:]]) + "\n...\n"


def repl_bug(bug: Bug) -> Bug:
    """``bug`` with both texts rewritten by :func:`repl_transcript` and its spans moved with them."""
    def move(source: str, offset: int) -> int:
        return offset + 4 * (source.count("\n", 0, offset) + 1)

    return Bug(bug.kind + "_repl", repl_transcript(bug.clean), repl_transcript(bug.text), move(bug.text, bug.start),
               move(bug.text, bug.end), move(bug.clean, bug.clean_start), move(bug.clean, bug.clean_end),
               bug.original, bug.replacement)


_C_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]{3,}\b")


def c_typo(text: str, seed: int = 0) -> Bug | None:
    """The typo rule on C: a later use of an identifier outside comments gets two interior letters swapped."""
    rng = random.Random(f"{seed}:c")
    stripped = re.sub(r"/\*.*?\*/|//[^\n]*", lambda m: " " * len(m.group()), text, flags=re.S)
    seen: set[str] = set()
    later = []
    for m in _C_IDENT.finditer(stripped):
        if m.group() in seen and not stripped[stripped.rfind("\n", 0, m.start()) + 1:].lstrip().startswith("#"):
            later.append(m)
        seen.add(m.group())
    rng.shuffle(later)
    for m in later:
        new = swap_typo(m.group(), rng)
        if new and new not in seen:
            return _replace("c_typo", text, m.start(), m.group(), new)
    return None
