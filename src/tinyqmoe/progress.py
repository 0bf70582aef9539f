"""Progress bars: on stderr, only when stderr is a terminal, named after what they count.

Redirected to a file or a pipe, nothing is drawn (no carriage-return updates in logs); `enabled=False`
(the CLI's --no-progress / --quiet) hides them on a terminal too. No colour is ever used (NO_COLOR).
"""
from __future__ import annotations

import sys


def bar(iterable=None, *, desc: str, unit: str = "it", total: int | None = None, enabled: bool = True, **kw):
    """A tqdm bar, or a silent stand-in with the same interface when not on a terminal or disabled."""
    from tqdm import tqdm

    # disable=None: tqdm draws only when the stream is a terminal
    return tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, disable=None if enabled else True,
                dynamic_ncols=True, colour=None, **kw)


def layer_callback(total: int, desc: str, enabled: bool = True):
    """A `progress(done, total)` callback drawing a bar over layers; `progress(None, None)` closes it."""
    b = bar(desc=desc, unit="layer", total=total, enabled=enabled, leave=False)

    def update(done, _total):
        if done is None:
            b.close()
        else:
            b.update(done - b.n)

    return update
