"""A progress bar: tqdm when installed, else a line every 10 %."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, desc: str, enabled: bool = True) -> Iterator[T]:
    """Yield ``items``, showing progress on stderr when ``enabled``."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        step = max(total // 10, 1)
        for i, item in enumerate(items, 1):
            yield item
            if i % step == 0 or i == total:
                print(f"{desc}: {i}/{total}", file=sys.stderr, flush=True)
        return
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for item in items:
            yield item
            bar.update(1)
