"""Label confidence: the model's probability of the label it chose, among the allowed categories.

A label answer is JSON (`{"label": "positive"}`, or `{"labels": ["bug", "billing"]}` with
multi_label), written under a grammar that allows only the categories. The response's token
logprobs (OpenAI chat shape: `logprobs.content[]`, each token with `bytes`, `logprob` and
`top_logprobs`) are the model's own distribution over its whole vocabulary (the local engine
reports them before the grammar; upstreams vary). The raw probability of the label's tokens
therefore also measures how much mass went to text the grammar forbids (`Positive`, a
different spacing, prose), which says nothing about which category the model prefers: on
smollm2-135m it came out around 0.05 whatever the answer. The confidence reported here is
that probability *renormalised over the allowed categories*:

    confidence(chosen) = P(chosen) / sum of P(c) over the allowed categories c

Each P(c) is read off the token tree the response exposes. The walk starts at the token that
holds the label's opening quote and follows the tokens the model generated. At each of those
positions, `top_logprobs` lists the likeliest tokens the model could have written instead;
an alternative is *consistent* with a category when the text it would make (the generated
text up to that position, then the alternative) and the category's JSON string agree as far
as both go (one is a prefix of the other). Every consistent alternative is an event disjoint
from the generated path and from the others (the tokens differ at that position), with
probability P(generated tokens before it) x P(alternative):

- consistent with some category other than the chosen one: its mass counts for those
  categories (the denominator only). That is where a category branches off the generated
  path, at its distinguishing token, so labels that share a prefix (`very positive` / `very
  negative`, or `pos` / `positive`) are compared where they actually differ, each with the
  probability of its shared prefix;
- consistent with the chosen category only: another tokenization of it (`pos` instead of
  `positive`), which counts for the chosen label (numerator and denominator);
- consistent with no category: text the grammar forbids; left out, i.e. conditioned away.

The generated path itself counts for the chosen label up to the first token after which no
other category is consistent with it (where the label is decided). Tokens after that point
are not multiplied in: the other categories' masses are also taken only up to their
distinguishing token (what follows it is not in the response, and is forced by the grammar
anyway), so both sides of the ratio are measured the same way, and the closing `"}` token
(which some models merge with a comma or brace they would rather not write) does not dilute
the confidence.

Honest limits, by construction:

- A category that is not among the `top_logprobs` where it branches off counts as zero (its
  probability is below the least likely alternative listed there). The request asks for
  `LABEL_TOP_LOGPROBS` (20, the most OpenAI's API and the local engine return) alternatives
  per token, so with 3 categories that is the top 20 of the vocabulary; with more than ~20
  categories the rare ones may be missed and the confidence is then an upper bound.
- An alternative consistent with both the chosen category and another (a short token both
  start with) counts for the others only: its split is not in the response. The confidence
  errs low there, never high.
- Without `top_logprobs` at a position the walk needs (a backend that returns none, or an
  empty list), the categories cannot be compared: the confidence is None, never the
  unnormalised probability passed off as one, and never a made-up number.

multi_label: each chosen label is scored as above at the place it is written, among the
categories not written before it in the answer (a repeat is not a new choice); the answer's
confidence is the *least* confident of its labels, so a threshold on it holds for every label
in the row. It measures how sure the model was of each label it wrote, not whether it should
have written more (the decision to close the list is not scored).

Pure functions on the response body: no backend calls.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

LABEL_TOP_LOGPROBS = 20
"""`top_logprobs` asked for by label requests: the most the OpenAI API (and the local engine) allow."""

_JSON_STRING = re.compile(rb'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class _Token:
    piece: bytes
    start: int  # byte offsets in the answer
    end: int
    logprob: float
    alternatives: list[tuple[bytes, float]] | None  # top_logprobs; None when absent or unusable


def label_confidence(logprobs: Any, key: str, categories: list[str], labels: list[str]) -> float | None:
    """The confidence of the chosen `labels` (the answer's `key` value, repeats removed) among
    `categories`, from a chat choice's `logprobs`; None when they cannot give one (see the
    module docstring for the method)."""
    tokens = _tokens(logprobs)
    if tokens is None or not labels:
        return None
    text = b"".join(token.piece for token in tokens)
    written: list[str] = []
    confidences: dict[str, float] = {}
    for value, start, end in _value_spans(text, key):
        if value in written:
            continue
        others = [c for c in categories if c != value and c not in written]
        written.append(value)
        confidence = _renormalised(tokens, text, start, end, value, others)
        if confidence is None:
            return None
        confidences[value] = confidence
    if any(label not in confidences for label in labels):
        return None
    return min(confidences[label] for label in labels)


def _renormalised(
    tokens: list[_Token], text: bytes, start: int, end: int, chosen: str, others: list[str]
) -> float | None:
    """P(chosen) / P(any category) for the JSON string whose characters span text[start:end]."""
    first = next((i for i, t in enumerate(tokens) if t.start < start and t.end >= start), None)
    if first is None:
        return None
    origin = tokens[first].start
    lead = text[origin:start]  # what the first token holds up to the opening quote, included
    chosen_forms = [text[origin : end + 1], *(lead + form for form in _forms(chosen))]
    other_forms = [lead + form for other in others for form in _forms(other)]
    chosen_terms: list[float] = []
    other_terms: list[float] = []
    path = 0.0  # log P(the generated tokens from `first` up to this position)
    for token in tokens[first:]:
        if token.alternatives is None:
            return None
        prefix = text[origin : token.start]
        for piece, logprob in token.alternatives:
            if piece == token.piece:
                continue  # the path itself, counted below
            written = prefix + piece
            if _fits(written, other_forms):
                other_terms.append(path + logprob)
            elif _fits(written, chosen_forms):
                chosen_terms.append(path + logprob)
        path += token.logprob
        if not _fits(text[origin : token.end], other_forms):  # the label is decided here
            chosen_terms.append(path)
            return math.exp(_logsumexp(chosen_terms) - _logsumexp(chosen_terms + other_terms))
    return None


def _forms(category: str) -> list[bytes]:
    """The category's JSON string without its opening quote (`positive"`), with raw UTF-8 and
    with \\u escapes (what llama-cpp-python's schema grammar writes): either may be generated."""
    forms = [orjson.dumps(category)[1:], json.dumps(category).encode()[1:]]
    return forms[:1] if forms[0] == forms[1] else forms


def _fits(written: bytes, forms: Iterable[bytes]) -> bool:
    """Whether `written` agrees with one of `forms` as far as both go."""
    return any(written[: len(form)] == form[: len(written)] for form in forms)


def _logsumexp(values: list[float]) -> float:
    peak = max(values)
    return peak + math.log(math.fsum(math.exp(v - peak) for v in values))


def _tokens(logprobs: Any) -> list[_Token] | None:
    """The answer's tokens placed at their byte offsets, or None when the logprobs are unusable."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        return None
    tokens: list[_Token] = []
    for entry in content:
        piece, logprob = _token_bytes(entry), _logprob(entry)
        if piece is None or logprob is None:
            return None
        start = tokens[-1].end if tokens else 0
        tokens.append(_Token(piece, start, start + len(piece), logprob, _alternatives(entry)))
    return tokens


def _alternatives(entry: dict[str, Any]) -> list[tuple[bytes, float]] | None:
    top = entry.get("top_logprobs")
    if not isinstance(top, list) or not top:
        return None
    alternatives = []
    for alternative in top:
        piece, logprob = _token_bytes(alternative), _logprob(alternative)
        if piece is None or logprob is None:
            return None
        alternatives.append((piece, logprob))
    return alternatives


def _logprob(entry: Any) -> float | None:
    score = entry.get("logprob") if isinstance(entry, dict) else None
    if isinstance(score, bool) or not isinstance(score, int | float) or math.isnan(score):
        return None
    return float(score)


def _token_bytes(token: Any) -> bytes | None:
    """A token's bytes: `bytes` when given (exact, even for part of a character), else its text."""
    if not isinstance(token, dict):
        return None
    raw = token.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)
    text = token.get("token")
    return text.encode() if isinstance(text, str) else None


def _value_spans(text: bytes, key: str) -> list[tuple[str, int, int]]:
    """(value, start, end) of the string after `"key":`, or of each string in its array;
    start and end delimit the string's characters, inside its quotes."""
    found = re.search(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*', text)
    if found is None:
        return []
    pos = found.end()
    if not text.startswith(b"[", pos):
        value = _string_at(text, pos)
        return [] if value is None else [value[:3]]
    spans = []
    pos += 1
    while (value := _string_at(text, _skip_space(text, pos))) is not None:
        spans.append(value[:3])
        pos = _skip_space(text, value[3])
        if not text.startswith(b",", pos):
            break
        pos += 1
    return spans


def _string_at(text: bytes, pos: int) -> tuple[str, int, int, int] | None:
    """The JSON string at `pos`: its value, where its characters start and end, and where it ends."""
    match = _JSON_STRING.match(text, pos)
    if match is None:
        return None
    try:
        value = orjson.loads(match.group(0))
    except orjson.JSONDecodeError:
        return None
    return value, match.start(1), match.end(1), match.end()


def _skip_space(text: bytes, pos: int) -> int:
    while pos < len(text) and text[pos] in b" \t\r\n":
        pos += 1
    return pos
