"""Stand-in for `model.forward_batch` until the engine's multi-sequence pass lands on main (issue 10).

It loops over the sequences with today's single-sequence `forward`, cutting every token list into
pieces of at most SMALL_BATCH tokens so that only the per-row streaming kernels run (what
path="stream" promises): a row's result never depends on the rest of the batch. It does not share
the pass over the weights between sequences, so it gives correctness, not the batching speed-up.
Delete this file when Model.forward_batch exists.
"""
from __future__ import annotations

from tinyqmoe.model.forward import forward
from tinyqmoe.kernels.matvec import SMALL_BATCH


def forward_batch(model, states, token_lists, path: str = "stream"):
    """Logits (1, V) of the last token of each token list, appended at each state's position."""
    if hasattr(model, "forward_batch"):
        return model.forward_batch(states, token_lists, path=path)
    out = []
    for state, ids in zip(states, token_lists):
        for i in range(0, len(ids), SMALL_BATCH):
            logits = forward(model.weights, state, ids[i: i + SMALL_BATCH])
        out.append(logits)
    return out


def truncate(state, n: int) -> None:
    """Forget positions >= n (RunState.truncate once it exists)."""
    if hasattr(state, "truncate"):
        state.truncate(n)
    else:
        state.pos = n
