"""Turning sampled tokens into text as they arrive: incremental decoding and stop strings.

One :class:`TextTracker` per request. Each new token re-decodes the request's
tokens and hands out only the text that is final: nothing that ends in an
incomplete UTF-8 sequence (a byte-level token can split a character), and
nothing that could still turn out to be the start of a stop string. The
non-streamed answer is the concatenation of the same pieces, so streamed and
non-streamed text are equal by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REPLACEMENT = "\ufffd"  # what a decoder prints for an incomplete UTF-8 sequence


@dataclass
class TextTracker:
    """The text of one answer, handed out in final pieces.

    ``stop_ids``: tokens that end the answer (not part of the text);
    ``stops``: strings that end it (not part of the text either; OpenAI's ``stop``).
    """

    tokenizer: object
    stop_ids: frozenset[int]
    stops: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    emitted: str = ""
    finished: str | None = None  # "stop" | "length" once done
    sampled: int = 0  # every token sampled, stop token included (usage counts it)

    def push(self, token_id: int) -> str:
        """Add one sampled token; returns the new final text (may be empty)."""
        if self.finished:
            raise RuntimeError("push after the answer finished")
        self.sampled += 1
        if token_id in self.stop_ids:
            return self._finish("stop")
        self.ids.append(token_id)
        text = self._decode()
        cut = _first_stop(text, self.stops, start=max(0, len(self.emitted) - _longest(self.stops)))
        if cut is not None:
            return self._emit_until(text, cut, finish="stop")
        if text.endswith(REPLACEMENT):
            return ""  # wait for the rest of the character
        return self._emit_until(text, len(text) - _held_back(text, self.stops))

    def finish_length(self) -> str:
        """The answer ran out of tokens: hand out what was held back."""
        return self._finish("length")

    def _finish(self, reason: str) -> str:
        text = self._decode()
        return self._emit_until(text, len(text), finish=reason)

    def _emit_until(self, text: str, end: int, *, finish: str | None = None) -> str:
        end = max(end, len(self.emitted))
        piece = text[len(self.emitted) : end] if text.startswith(self.emitted) else ""
        self.emitted += piece
        if finish:
            self.finished = finish
        return piece

    def _decode(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)


def _first_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Where the earliest stop string begins in ``text`` (searching from ``start``), else None."""
    found = [i for i in (text.find(stop, start) for stop in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the beginning of a stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best


def _longest(stops: tuple[str, ...]) -> int:
    return max((len(s) for s in stops), default=0)
