"""The demo corpus as a list of items, each rendered independently (any order, any process).

An ``Item`` names what to render; ``render_item`` turns it into the file's bytes and
its ground-truth row. Every random choice comes from a generator seeded with
``[seed, class_index, i, kind_code]``, so results do not depend on the order of
rendering or on the number of worker processes.
"""
from __future__ import annotations

from stages.demo import junk
from stages.demo.items import Item, Rendered, render_pot_item


def plan_items(classes: list[str], seed: int, size: int, n_pots: int,
               n_distractors: int, n_junk: int) -> list[Item]:
    """Every item of the corpus, class by class: pots, then distractors, then junk."""
    items = []
    for cls in classes:
        for kind, count in (("pot", n_pots), ("distractor", n_distractors), ("junk", n_junk)):
            items += [Item(cls, kind, i, seed, size, n_pots) for i in range(count)]
    return items


def render_item(item: Item) -> Rendered:
    """Render one item; top-level so a process pool can call it."""
    if item.kind == "pot":
        return render_pot_item(item)

    if item.kind == "distractor":
        return junk.render_distractor(item)
    return junk.render_junk(item)
