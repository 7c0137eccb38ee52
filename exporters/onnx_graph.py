"""Small lookups over an ``onnx.ModelProto`` graph that the graph rewrites share."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GraphIndex:
    """Where each tensor comes from and goes: initializers by name, each output's producer, each input's readers."""

    inits: dict
    producer: dict
    consumers: dict


def graph_index(model) -> GraphIndex:
    """Index ``model``'s graph as it is now (rebuild it after editing the graph)."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return GraphIndex({i.name: i for i in model.graph.initializer},
                      {o: n for n in model.graph.node for o in n.output}, consumers)


def attr(node, name: str, default=None):
    """The value of ``node``'s attribute ``name``, or ``default``."""
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def drop_unused_initializers(model) -> None:
    """Remove the initializers no node reads any more (after a rewrite)."""
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
