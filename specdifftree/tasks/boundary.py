"""Where a prompt may end: at a place the tokenizer in use would end a token anyway.

The model continues the prompt's tokens. If the prompt ends in the middle of what the tokenizer
would encode as one token together with the continuation, the model is asked for a token sequence
it never saw in training. Example: SentencePiece tokenizers (Llama 2, Mistral, Gemma) glue a space
to what follows (``"▁5"``), so a prompt ending in the separator's space leaves a bare ``"▁"`` token
in the prompt that real text never has; Llama 3 keeps the space of ``", 56"`` as its own token but
glues it to a minus sign (``" -"``).

Rule: encode prompt + continuation for a few typical continuations; the prompt is kept when its own
tokens are a prefix of every one of them. Otherwise its trailing whitespace is moved into the
continuation (the model writes it) and the check is repeated on the shortened prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Boundary:
    """The prompt text to use and its tokens.

    ``moved``: trailing whitespace taken off the prompt (the continuation starts with it);
    ``natural``: the final prompt's tokens are a prefix of prompt + every checked continuation.
    """

    text: str
    tokens: tuple[int, ...]
    moved: str
    natural: bool

    @property
    def status(self) -> str:
        if not self.natural:
            return "split"
        return "whitespace_moved" if self.moved else "natural"


def _is_prefix(encode: Callable[[str], Sequence[int]], prompt: str, toks: Sequence[int],
               continuations: Sequence[str]) -> bool:
    n = len(toks)
    return all(list(encode(prompt + c)[:n]) == list(toks) for c in continuations)


def clean_boundary(encode: Callable[[str], Sequence[int]], prompt: str,
                   continuations: Sequence[str]) -> Boundary:
    """The :class:`Boundary` for ``prompt`` under ``encode`` (the prompt encoder, BOS included).

    ``continuations``: typical texts the model is expected to write right after the prompt.
    """
    toks = tuple(int(t) for t in encode(prompt))
    conts = [c for c in continuations if c]
    if not conts or _is_prefix(encode, prompt, toks, conts):
        return Boundary(prompt, toks, "", True)
    stripped = prompt.rstrip()
    moved = prompt[len(stripped):]
    if not moved or not stripped:
        return Boundary(prompt, toks, "", False)
    stoks = tuple(int(t) for t in encode(stripped))
    ok = _is_prefix(encode, stripped, stoks, [moved + c for c in conts])
    return Boundary(stripped, stoks, moved, ok)
