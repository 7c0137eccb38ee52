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


class UnionFind:
    """Groups of tensor names (the tensors that must share one quantization scale)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, t: str) -> str:
        while self.parent.setdefault(t, t) != t:
            self.parent[t] = self.parent[self.parent[t]]
            t = self.parent[t]
        return t

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)

    def groups(self) -> dict[str, list[str]]:
        """Root -> members, every name seen."""
        out: dict[str, list[str]] = {}
        for t in list(self.parent):
            out.setdefault(self.find(t), []).append(t)
        return out
