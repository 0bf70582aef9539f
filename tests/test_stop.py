"""StopMatcher: stop strings over streamed text, never emitting a partial match."""
import random

import pytest

from tinyqmoe.model.stop import StopMatcher


def run(stops, pieces):
    """Everything emitted, and whether a stop was completed."""
    m = StopMatcher(stops)
    out = []
    for p in pieces:
        emit, stopped = m.push(p)
        out.append(emit)
        if stopped:
            return "".join(out), True
    return "".join(out) + m.flush(), False


def reference(stops, text):
    """The text before the stop string completed first (and whether there was one), from the whole text."""
    # each stop's first occurrence is where it is completed soonest; the first completed one wins
    ends = [(text.find(s) + len(s), text.find(s)) for s in stops if s and s in text]
    if not ends:
        return text, False
    return text[: min(ends)[1]], True


def test_stop_inside_one_piece():
    assert run(["###"], ["Hello ### world"]) == ("Hello ", True)


def test_stop_split_across_pieces_is_never_emitted_in_part():
    m = StopMatcher(["\nUser:"])
    assert m.push("Sure.\n") == ("Sure.", False)       # "\n" could start the stop: held back
    assert m.push("Us") == ("", False)
    assert m.push("er: hi") == ("", True)


def test_held_text_released_when_the_match_fails():
    m = StopMatcher(["\nUser:"])
    assert m.push("a\nUs") == ("a", False)
    assert m.push("ually") == ("\nUsually", False)
    assert m.flush() == ""


def test_flush_returns_a_trailing_partial_match():
    m = StopMatcher(["STOP"])
    assert m.push("the end ST") == ("the end ", False)
    assert m.flush() == "ST"
    assert m.flush() == ""


def test_the_first_completed_stop_wins_whatever_the_pieces():
    assert run(["bc", "abcd"], ["abc"]) == ("a", True)
    assert run(["bc", "abcd"], ["abcd"]) == ("a", True)
    assert run(["abc", "bc"], ["abc"]) == ("", True)     # both end together: the longer one
    assert run(["world", "o"], ["hello world"]) == ("hell", True)


def test_no_stops_passes_everything_through():
    m = StopMatcher([])
    assert m.push("abc") == ("abc", False)
    assert m.push("") == ("", False)
    assert StopMatcher([""]).push("x") == ("x", False)


def test_after_a_stop_nothing_more_is_emitted():
    m = StopMatcher(["x"])
    assert m.push("axb") == ("a", True)
    assert m.push("more") == ("", True)
    assert m.flush() == ""


@pytest.mark.parametrize("seed", range(40))
def test_random_pieces_match_the_whole_text_reference(seed):
    rng = random.Random(seed)
    alphabet = "ab\n:"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 3))]
    cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 8))))
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    emitted, stopped = run(stops, pieces)
    want, want_stopped = reference(stops, text)
    assert stopped == want_stopped
    assert emitted == want


@pytest.mark.parametrize("seed", range(20))
def test_nothing_emitted_is_ever_taken_back(seed):
    """After every piece, the text out so far is a prefix of the final answer: no partial stop leaks."""
    rng = random.Random(1000 + seed)
    stops = ["<|end|>", "\n\n", "end!"]
    text = "".join(rng.choice(["<|", "end", "|>", "\n", "x", "<", "!"]) for _ in range(30))
    want, _ = reference(stops, text)
    m = StopMatcher(stops)
    emitted = ""
    for ch in text:
        e, stopped = m.push(ch)
        emitted += e
        assert want.startswith(emitted)
        if stopped:
            break
    else:
        emitted += m.flush()
    assert emitted == want
