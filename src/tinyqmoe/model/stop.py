"""Stop strings over streamed text: text is released only once it cannot be the start of a stop.

    m = StopMatcher(["\\nUser:", "###"])
    emit, stopped = m.push(piece)    # for each decoded piece; stop when `stopped`
    tail = m.flush()                 # the text held back, once generation ends without a stop

A stop string is found wherever it falls across pieces; the text before the stop that is completed
first is released and the stop itself never is, whatever the pieces were. Until then the matcher holds back the longest suffix of
the text that is a prefix of some stop string, so a partial match is never emitted.
"""
from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in dict.fromkeys(stops) if s]   # empty strings never match
        self.stopped = False
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit, whether a stop string was completed)."""
        if self.stopped:
            return "", True
        buf = self._held + text
        hits = [(i + len(s), i) for s in self.stops if (i := buf.find(s)) >= 0]
        if hits:  # the stop completed first as the text arrived (the longer one if two end together)
            self.stopped, self._held = True, ""
            return buf[: min(hits)[1]], True
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep:]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """The held-back text (generation ended without completing a stop)."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:k]):
                    best = k
                    break
        return best
