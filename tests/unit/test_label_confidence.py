"""Label confidence: the chosen label's probability renormalised over the allowed categories,
from synthetic token logprobs in OpenAI's chat shape (`batchgate/core/label_confidence.py`)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from batchgate.core.label_confidence import LABEL_TOP_LOGPROBS, label_confidence
from batchgate.core.operations import Item, compile_request, interpret, parse_operation

SENTIMENTS = ["positive", "negative", "mixed"]


def token(text: str | bytes, logprob: float, alternatives: dict[str, float] | None = None) -> dict[str, Any]:
    """One generated token; `alternatives` (text -> logprob) are its other top_logprobs, listed
    with the token itself, most likely first, as backends do."""
    piece = text.encode() if isinstance(text, str) else text
    top = sorted([(piece, logprob), *((t.encode(), lp) for t, lp in (alternatives or {}).items())], key=lambda x: -x[1])
    return {
        "token": piece.decode(errors="replace"),
        "logprob": logprob,
        "bytes": list(piece),
        "top_logprobs": [{"token": p.decode(errors="replace"), "logprob": lp, "bytes": list(p)} for p, lp in top],
    }


def logprobs(*tokens: dict[str, Any]) -> dict[str, Any]:
    return {"content": list(tokens)}


def p(*logprobs: float) -> float:
    return math.exp(sum(logprobs))


PREFIX = [token('{"', -0.5), token("label", -0.1), token('":', -0.1)]  # what precedes the quote


def single(value_tokens: list[dict[str, Any]]) -> dict[str, Any]:
    return logprobs(*PREFIX, *value_tokens)


# --- renormalisation --------------------------------------------------------------------


def test_the_chosen_label_is_renormalised_over_the_categories_only() -> None:
    # smollm2-135m's distribution seen in a probe: most mass on text the grammar forbids
    # ('Positive', 'The'), and on a closing token it did not want
    answer = single(
        [
            token(' "', -0.16, {' "<': -2.35, '"': -3.82}),
            token("positive", -1.76, {"Positive": -1.67, "negative": -3.09, "The": -2.0, "mixed": -3.96}),
            token('"}', -0.92, {'",': -0.72, '"': -3.44}),
        ]
    )
    expected = p(-1.76) / (p(-1.76) + p(-3.09) + p(-3.96))
    assert label_confidence(answer, "label", SENTIMENTS, ["positive"]) == pytest.approx(expected)
    assert expected > 0.7  # the unnormalised probability of the label tokens was 0.07


def test_tokens_after_the_label_is_decided_do_not_count() -> None:
    def answer(closing_logprob: float) -> dict[str, Any]:
        return single(
            [
                token(' "', -0.1),
                token("negative", -0.4, {"positive": -1.5, "mixed": -2.5}),
                token('"}', closing_logprob),
            ]
        )

    sure, unsure = (label_confidence(answer(lp), "label", SENTIMENTS, ["negative"]) for lp in (-0.001, -3.0))
    assert sure == unsure == pytest.approx(p(-0.4) / (p(-0.4) + p(-1.5) + p(-2.5)))


def test_a_label_split_over_tokens_is_decided_at_its_distinguishing_token() -> None:
    # "pos" already tells positive from negative and mixed: "itive" is not multiplied in,
    # just as the other categories' continuations (not in the response) are not
    answer = single([token(' "', 0.0), token("pos", -0.2, {"neg": -1.0, "mixed": -3.0}), token("itive", -0.7)])
    answer["content"].append(token('"}', -0.01))
    assert label_confidence(answer, "label", SENTIMENTS, ["positive"]) == pytest.approx(
        p(-0.2) / (p(-0.2) + p(-1.0) + p(-3.0))
    )


def test_alternatives_that_straddle_the_opening_quote_count_for_their_category() -> None:
    # the token holding the opening quote may also hold the label's start: '"neg' competes
    # with the generated ' "' + 'positive'
    answer = logprobs(
        token('{"label":', -0.1),
        token(' "', -0.3, {' "neg': -1.4, ' "<': -2.0}),
        token("positive", -0.1, {"mixed": -2.5}),
        token('"}', 0.0),
    )
    chosen = p(-0.3, -0.1)
    expected = chosen / (chosen + p(-1.4) + p(-0.3, -2.5))
    assert label_confidence(answer, "label", SENTIMENTS, ["positive"]) == pytest.approx(expected)


def test_another_tokenization_of_the_chosen_label_counts_for_it() -> None:
    answer = single([token(' "', 0.0), token("positive", -0.5, {"pos": -2.0, "negative": -1.0})])
    answer["content"].append(token('"}', 0.0))
    expected = (p(-0.5) + p(-2.0)) / (p(-0.5) + p(-2.0) + p(-1.0))
    assert label_confidence(answer, "label", SENTIMENTS, ["positive"]) == pytest.approx(expected)


def test_one_category_is_certain() -> None:
    answer = single([token(' "', -0.2, {"Yes": -0.5}), token("spam", -3.0), token('"}', 0.0)])
    assert label_confidence(answer, "label", ["spam"], ["spam"]) == pytest.approx(1.0)


# --- labels that share a prefix ---------------------------------------------------------


def test_labels_sharing_a_prefix_are_compared_where_they_differ() -> None:
    categories = ["very positive", "very negative", "neutral"]
    answer = single(
        [
            token(' "', 0.0),
            # 'neutral' and 'neut' both lead to neutral; 'Very' is forbidden text
            token("very", -0.2, {"neutral": -2.0, "neut": -3.0, "Very": -1.0}),
            token(" positive", -0.5, {" negative": -1.0, " neg": -2.5, " Positive": -0.9}),
            token('"}', -0.3),
        ]
    )
    chosen = p(-0.2, -0.5)
    others = p(-2.0) + p(-3.0) + p(-0.2) * (p(-1.0) + p(-2.5))
    assert label_confidence(answer, "label", categories, ["very positive"]) == pytest.approx(chosen / (chosen + others))


def test_a_label_that_is_a_prefix_of_another_is_decided_at_its_closing_quote() -> None:
    categories = ["pos", "positive"]
    answer = single(
        [
            token(' "', 0.0),
            token("pos", -0.4, {"positive": -1.2}),
            # the closing quote decides: '"}' and '",' both end "pos"; 'itive' continues to "positive"
            token('"}', -0.3, {'",': -1.5, "itive": -2.0}),
        ]
    )
    chosen = p(-0.4) * (p(-0.3) + p(-1.5))
    others = p(-1.2) + p(-0.4, -2.0)
    assert label_confidence(answer, "label", categories, ["pos"]) == pytest.approx(chosen / (chosen + others))


def test_an_alternative_shared_by_the_chosen_label_and_another_counts_against_it() -> None:
    # 'p' could become "positive" or "pending": the response does not say which, so the
    # confidence errs low rather than high
    categories = ["positive", "pending"]
    answer = single([token(' "', 0.0), token("positive", -0.3, {"p": -2.0}), token('"}', 0.0)])
    expected = p(-0.3) / (p(-0.3) + p(-2.0))
    assert label_confidence(answer, "label", categories, ["positive"]) == pytest.approx(expected)


def test_escaped_and_multi_byte_labels_match_in_either_json_form() -> None:
    categories = ["négatif", "positif"]
    # llama-cpp-python's schema grammar writes \u escapes
    escaped = single([token(' "', 0.0), token("n", -0.1, {"pos": -1.0}), token("\\u00e9gatif", -0.5), token('"}', 0.0)])
    assert label_confidence(escaped, "label", categories, ["négatif"]) == pytest.approx(p(-0.1) / (p(-0.1) + p(-1.0)))
    # raw UTF-8, with a token boundary inside é's two bytes and an alternative in \u form
    e = "é".encode()
    raw = single(
        [
            token(' "', 0.0),
            token("p", -0.2, {"n": -1.0, "n\\u00e9": -2.0}),
            token(b"ositif", -0.1),
            token(b'"}', 0.0),
        ]
    )
    assert label_confidence(raw, "label", categories, ["positif"]) == pytest.approx(
        p(-0.2) / (p(-0.2) + p(-1.0) + p(-2.0))
    )
    split = single([token(b' "n' + e[:1], -0.2, {' "p': -1.5}), token(e[1:] + b"gatif", -0.3), token('"}', 0.0)])
    assert label_confidence(split, "label", categories, ["négatif"]) == pytest.approx(p(-0.2) / (p(-0.2) + p(-1.5)))


# --- missing alternatives ---------------------------------------------------------------


def test_a_category_missing_from_top_logprobs_counts_as_zero() -> None:
    answer = single([token(' "', 0.0), token("negative", -0.7, {"positive": -1.1}), token('"}', 0.0)])
    expected = p(-0.7) / (p(-0.7) + p(-1.1))  # "mixed" is below the listed alternatives
    assert label_confidence(answer, "label", SENTIMENTS, ["negative"]) == pytest.approx(expected)


@pytest.mark.parametrize("top", [None, [], "absent"])
def test_without_top_logprobs_where_needed_there_is_no_confidence(top: Any) -> None:
    answer = single([token(' "', 0.0), token("negative", -0.7), token('"}', 0.0)])
    label_token = answer["content"][4]
    if top == "absent":
        del label_token["top_logprobs"]
    else:
        label_token["top_logprobs"] = top
    # the unnormalised probability passed off as a confidence would be dishonest
    assert label_confidence(answer, "label", SENTIMENTS, ["negative"]) is None
    # tokens outside the label need none
    answer["content"][0]["top_logprobs"] = []
    answer["content"][4]["top_logprobs"] = token("negative", -0.7, {"positive": -1.0})["top_logprobs"]
    assert label_confidence(answer, "label", SENTIMENTS, ["negative"]) == pytest.approx(p(-0.7) / (p(-0.7) + p(-1.0)))


def test_no_logprobs_or_logprobs_of_another_text_give_no_confidence() -> None:
    assert label_confidence(None, "label", SENTIMENTS, ["mixed"]) is None
    assert label_confidence({"content": []}, "label", SENTIMENTS, ["mixed"]) is None
    other = single([token(' "', 0.0), token("negative", -0.1, {"mixed": -1.0}), token('"}', 0.0)])
    assert label_confidence(other, "label", SENTIMENTS, ["mixed"]) is None
    broken = single([token(' "', 0.0), token("mixed", -0.1), token('"}', 0.0)])
    broken["content"][4]["top_logprobs"][0]["logprob"] = "high"
    assert label_confidence(broken, "label", SENTIMENTS, ["mixed"]) is None


# --- multi-label ------------------------------------------------------------------------

TOPICS = ["billing", "bug", "praise"]


def test_multi_label_confidence_is_the_least_confident_label_among_those_not_yet_written() -> None:
    answer = logprobs(
        token('{"labels": [', -0.1),
        token('"', -0.01, {'"b': -6.0}),  # '"b' fits billing and bug: counted as others
        token("bill", -0.1, {"bug": -1.5, "praise": -3.0}),
        token("ing", -0.2),
        token('",', -0.3),
        token(' "', -0.05, {"]": -2.0}),
        # "billing" again would be a repeat, not a new choice: not a rival of "bug"
        token("bug", -1.0, {"bill": -0.5, "praise": -2.0}),
        token('"]}', -0.01),
    )
    billing = p(-0.01, -0.1) / (p(-0.01, -0.1) + p(-6.0) + p(-0.01, -1.5) + p(-0.01, -3.0))
    bug = p(-1.0) / (p(-1.0) + p(-2.0))
    assert billing > bug
    assert label_confidence(answer, "labels", TOPICS, ["billing", "bug"]) == pytest.approx(bug)


def test_a_repeated_label_counts_once() -> None:
    answer = logprobs(
        token('{"labels":["', 0.0),
        token("bug", -0.5, {"praise": -1.5}),
        token('","', 0.0),
        token("bug", -2.0),  # no top_logprobs needed: a repeat is not scored
        token('"]}', 0.0),
    )
    answer["content"][3]["top_logprobs"] = []
    assert label_confidence(answer, "labels", TOPICS, ["bug"]) == pytest.approx(p(-0.5) / (p(-0.5) + p(-1.5)))


# --- through the label operation --------------------------------------------------------


def response(text: str, content: dict[str, Any] | None) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
        "logprobs": content,
    }
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "smollm2-135m", "choices": [choice]}


def test_the_label_operation_asks_for_enough_alternatives_and_reports_the_renormalised_confidence() -> None:
    op = parse_operation("label", {"categories": SENTIMENTS})
    body = compile_request(op, Item("Great food, slow service."))
    assert body["logprobs"] is True and body["top_logprobs"] == LABEL_TOP_LOGPROBS == 20
    answer = single([token(' "', 0.0), token("mixed", -1.2, {"Mixed": -0.5, "negative": -1.9}), token('"}', 0.0)])
    outcome = interpret(op, 200, response('{"label": "mixed"}', answer), None)
    assert outcome.status == "succeeded"
    assert outcome.result == {"label": "mixed", "confidence": pytest.approx(p(-1.2) / (p(-1.2) + p(-1.9)))}
    assert interpret(op, 200, response('{"label": "mixed"}', None), None).result == {
        "label": "mixed",
        "confidence": None,
    }


def test_multi_label_operation_reports_one_confidence_for_the_deduplicated_answer() -> None:
    op = parse_operation("label", {"categories": TOPICS, "multi_label": True})
    answer = logprobs(
        token('{"labels": ["', 0.0),
        token("praise", -0.2, {"bug": -2.0}),
        token('", "', 0.0),
        token("praise", -3.0),
        token('"]}', 0.0),
    )
    outcome = interpret(op, 200, response('{"labels": ["praise", "praise"]}', answer), None)
    assert outcome.result == {"labels": ["praise"], "confidence": pytest.approx(p(-0.2) / (p(-0.2) + p(-2.0)))}


def test_tokens_without_bytes_are_read_from_their_text() -> None:
    # llama-cpp-python's server sends "bytes": null in chat logprobs
    answer = single(
        [token(' "', 0.0), token("negative", -2.3, {"B": -1.55, "bad": -3.19, "positive": -4.0}), token('"}', -0.4)]
    )
    for entry in answer["content"]:
        entry["bytes"] = None
        for alternative in entry["top_logprobs"]:
            alternative["bytes"] = None
    assert label_confidence(answer, "label", SENTIMENTS, ["negative"]) == pytest.approx(p(-2.3) / (p(-2.3) + p(-4.0)))
