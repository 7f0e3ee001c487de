"""Batches in which no concept appears twice, so an in-batch negative is never a true match."""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Sequence

import numpy as np


def unique_group_batches(groups: Sequence[str], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of index batches; every index appears once, no batch holds two of one group.

    Examples are dealt round-robin across groups (all groups' first example, then second, ...), each
    round shuffled, so big groups are spread over the epoch instead of piling up in its last batches.
    Batches smaller than 2 are dropped: a contrastive step needs a negative.
    """
    by_group: dict[str, list[int]] = defaultdict(list)
    for i in rng.permutation(len(groups)):
        by_group[groups[i]].append(int(i))
    stream: list[int] = []
    depth = max((len(v) for v in by_group.values()), default=0)
    for level in range(depth):
        layer = [members[level] for members in by_group.values() if len(members) > level]
        stream += [layer[j] for j in rng.permutation(len(layer))]
    pending = deque(stream)
    batches: list[list[int]] = []
    while pending:
        batch: list[int] = []
        seen: set[str] = set()
        skipped: list[int] = []
        while pending and len(batch) < batch_size:
            i = pending.popleft()
            if groups[i] in seen:
                skipped.append(i)
            else:
                batch.append(i)
                seen.add(groups[i])
        pending.extendleft(reversed(skipped))
        if len(batch) < 2:  # only one group is left: the rest cannot form a contrastive batch
            break
        batches.append(batch)
    return batches
