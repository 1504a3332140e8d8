"""How one forward pass routes through the choices, and what it used.

A supernet's forward pass is the functional graph's; what differs between a
training step, an evaluation and an extraction is how each `Choice` picks
its candidate. By default a choice switches on its `active_index` variable.
A `Plan`, entered as a context while a step is traced, can instead give a
choice

- a static candidate (a Python int: the graph holds that candidate only),
- a route (an int32 vector, one candidate per example: examples are grouped
  by candidate and each group runs through its own candidate only),
- a mask (a bool vector, one entry per candidate, for aggregating choices:
  the enabled candidates run in parallel and are aggregated).

A plan may also carry a `UsageRecorder`. Layers whose variables only some
paths use (the candidates of a choice, the row blocks of a `PaddedDense`)
record, while the step is traced, which of their variable groups the step
used, as tensors. The supernet's train step then updates each group only
where it was used: in graph mode an untaken branch gets a zero gradient,
not `None`, and Adam's momentum would still move it.

Plans live in a `contextvars.ContextVar` and are read at trace time only;
nothing here adds ops to a graph by itself.
"""

import contextlib
import contextvars

import tensorflow as tf

_PLAN = contextvars.ContextVar("keras_supernet_plan", default=None)


class UsageRecorder:
    """Collects, at trace time, which variable groups a step used.

    Each entry is either a switch (`index`, a scalar int32 tensor, and one
    list of variables per candidate: group `k` is used where `index == k`)
    or masks (one bool tensor per group). Entries are kept per owner; an
    owner recorded twice (a layer called twice in one step) keeps the union
    of its uses.
    """

    def __init__(self):
        self._entries = {}

    @staticmethod
    def _key(owner):
        # Layers are keyed by identity; value keys (tuples) by value.
        return owner if isinstance(owner, (str, tuple)) else id(owner)

    def record_switch(self, owner, index, groups):
        key = self._key(owner)
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = ("switch", index, [list(g) for g in groups])
        elif not (entry[0] == "switch" and entry[1] is index):
            self.record_masks(
                owner, [tf.equal(index, k) for k in range(len(groups))], groups
            )

    def record_masks(self, owner, masks, groups):
        key = self._key(owner)
        if key in self._entries:
            masks = [tf.logical_or(a, b) for a, b in zip(self._masks_of(key), masks)]
        self._entries[key] = ("masks", list(masks), [list(g) for g in groups])

    def _masks_of(self, key):
        kind, selector, groups = self._entries[key]
        if kind == "masks":
            return selector
        return [tf.equal(selector, k) for k in range(len(groups))]

    def entries(self):
        """`(kind, selector, groups)` per owner, in recording order."""
        return list(self._entries.values())

    def recorded_variables(self):
        """Every variable some entry holds (ids)."""
        return {
            id(v)
            for _, _, groups in self._entries.values()
            for group in groups
            for v in group
        }


class Plan:
    """Per-choice routing of one forward pass, and an optional recorder.

    Args:
        static: dict from `Choice` to a Python int (its candidate).
        routes: dict from `Choice` to an int32 vector (a candidate per
            example).
        masks: dict from `Choice` to a bool vector (its enabled candidates).
        recorder: a `UsageRecorder`, or None.
    """

    def __init__(self, static=None, routes=None, masks=None, recorder=None):
        self._static = {id(k): v for k, v in (static or {}).items()}
        self._routes = {id(k): v for k, v in (routes or {}).items()}
        self._masks = {id(k): v for k, v in (masks or {}).items()}
        self.recorder = recorder

    def static_index(self, choice):
        return self._static.get(id(choice))

    def route(self, choice):
        return self._routes.get(id(choice))

    def mask(self, choice):
        return self._masks.get(id(choice))


def current():
    """The plan of the forward pass being traced, or None."""
    return _PLAN.get()


def recorder():
    """The usage recorder of the forward pass being traced, or None."""
    plan = _PLAN.get()
    return None if plan is None else plan.recorder


@contextlib.contextmanager
def planned(plan):
    """Traces the forward passes inside the block with `plan`."""
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)
