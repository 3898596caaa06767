"""A1111 prompt syntax, pinned case by case: emphasis runs, prompt-editing schedules, AND weights.

Each expected value is what A1111 1.10 produces for the prompt (its documented behaviour; the
few places where we deliberately differ say so). Malformed prompts never raise.
"""

from __future__ import annotations

import random

import pytest

from engine.conditioning.prompt_parser import BREAK, parse_emphasis, prompt_schedule, split_and

R, S = 1.1, 1 / 1.1  # round and square bracket multipliers

EMPHASIS = [
    ("normal text", [("normal text", 1.0)]),
    ("", [("", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", R), (" word", 1.0)]),
    ("an [unimportant] word", [("an ", 1.0), ("unimportant", S), (" word", 1.0)]),
    ("((twice))", [("twice", R * R)]),
    ("[[twice]]", [("twice", S * S)]),
    ("(([a]))", [("a", R * R * S)]),
    ("(word:1.5)", [("word", 1.5)]),
    ("(word: 1.5 )", [("word", 1.5)]),
    ("(word:0)", [("word", 0.0)]),
    ("(a:-0.5)", [("a", -0.5)]),
    ("((word:1.5))", [("word", 1.5 * R)]),
    ("(unbalanced", [("unbalanced", R)]),
    ("[unbalanced", [("unbalanced", S)]),
    ("x]y)z", [("x]y)z", 1.0)]),  # unmatched closers are text
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("a \\\\ b", [("a \\ b", 1.0)]),
    ("a\\", [("a\\", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", R)]),
    ("(a:b)", [("a:b", R)]),  # not a number: the colon is text
    ("(x:1.2.3) y", [("x:1.2.3", R), (" y", 1.0)]),  # a bad number stays as text
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.3 * R * R),
            (" ", R),
            ("on", 1.0),
            (" a ", R),
            ("hill", 0.55),
            (", sun, ", R),
            ("sky", R**4),
            (".", R),
        ],
    ),  # fmt: skip
    ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
    ("BREAK", [BREAK]),
    ("a BREAKb", [("a BREAKb", 1.0)]),  # only the whole word
    ("(a)BREAK(b)", [("a", R), BREAK, ("b", R)]),
    # We differ here: A1111 weights the marker too and then no longer treats it as a break.
    ("(a BREAK b)", [("a", R), BREAK, ("b", R)]),
]


@pytest.mark.parametrize(("prompt", "expected"), EMPHASIS, ids=[c[0] or "empty" for c in EMPHASIS])
def test_emphasis(prompt, expected):
    got = parse_emphasis(prompt)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


SCHEDULES = [
    ("test", 10, [(10, "test")]),
    ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
    ("a [b: 3]", 10, [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", 10, [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", 10, [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("[from::4]", 10, [(4, "from"), (10, "")]),
    ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
    ("a [b:c:0.25] [d:e:0.75]", 4, [(1, "a b d"), (3, "a c d"), (4, "a c e")]),
    ("[a:b:3.7]", 4, [(3, "a"), (4, "b")]),
    ("[a:b:0]", 10, [(10, "b")]),
    ("[a:b:25]", 10, [(10, "a")]),  # beyond the last step: never switches
    ("a [unbalanced", 10, [(10, "a [unbalanced")]),
    ("[a|b", 4, [(4, "[a|b")]),
    ("[a:b:c]", 4, [(4, "[a:b:c]")]),  # not a number: literal
    ("[a:b:-1]", 4, [(4, "[a:b:-1]")]),  # signed: literal, as A1111's grammar
    ("a \\[b:c:2\\]", 4, [(4, "a \\[b:c:2\\]")]),  # escaped brackets stay for the emphasis pass
    ("((a][:b:c [d:3]", 10, [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("a (b [c:d:2]) e", 4, [(2, "a (b c) e"), (4, "a (b d) e")]),
    ("a (b [c:d:2] e", 4, [(2, "a (b c e"), (4, "a (b d e")]),
    ("[a|(b:1.1)]", 4, [(1, "a"), (2, "(b:1.1)"), (3, "a"), (4, "(b:1.1)")]),
    ("[fe|]male", 4, [(1, "female"), (2, "male"), (3, "female"), (4, "male")]),
    ("[fe|||]male", 5, [(1, "female"), (2, "male"), (3, "male"), (4, "male"), (5, "female")]),
    ("[a|b] [c:d:2]", 4, [(1, "a c"), (2, "b c"), (3, "a d"), (4, "b d")]),
    ("[[a|b]:c:2]", 4, [(1, "a"), (2, "b"), (3, "c"), (4, "c")]),
    ("[a:[b|c]:2]", 4, [(1, "a"), (2, "a"), (3, "b"), (4, "c")]),
    ("[|]", 2, [(1, ""), (2, "")]),
]


@pytest.mark.parametrize(("prompt", "steps", "expected"), SCHEDULES, ids=[c[0] for c in SCHEDULES])
def test_prompt_schedule(prompt, steps, expected):
    assert [tuple(entry) for entry in prompt_schedule(prompt, steps)] == expected


AND_CASES = [
    ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),
    ("a cat AND a dog:0.5", [("a cat", 1.0), (" a dog", 0.5)]),
    ("a cat:1.5 AND a dog :-0.3", [("a cat", 1.5), (" a dog", -0.3)]),
    ("ANDROID", [("ANDROID", 1.0)]),
    ("a:.5", [("a", 0.5)]),
    ("x:abc AND y", [("x:abc", 1.0), (" y", 1.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), AND_CASES, ids=[c[0] for c in AND_CASES])
def test_split_and(prompt, expected):
    assert split_and(prompt) == expected


def test_malformed_prompts_never_raise_and_keep_their_text():
    rng = random.Random(0)
    alphabet = "ab ()[]:|\\.0123BREAK AND"
    for _ in range(2000):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        schedule = prompt_schedule(prompt, 7)
        assert schedule and schedule[-1].end_at_step == 7
        assert [e.end_at_step for e in schedule] == sorted({e.end_at_step for e in schedule})
        for entry in schedule:
            parse_emphasis(entry.text)
        split_and(prompt)
    deep = "(" * 5000 + "a" + ")" * 5000
    assert prompt_schedule(deep, 3)[-1].end_at_step == 3
    parse_emphasis(deep)
