"""One form for V1 (`layers`, enum types) and V2 (`layer`) nets: a list of `Layer`.

V1 layers use different field numbers and an enum type; the binary and text readers already map
them to the same field names, so upgrading is a type-name lookup. Layers excluded from the TEST
phase (or only included in TRAIN) are dropped, as Caffe does when it builds a deploy net.
"""

from __future__ import annotations

__all__ = ["Layer", "net_layers", "TEST_PHASE"]

from dataclasses import dataclass

from graphfix.convert.caffe._schema import V1_TYPES, Msg

TEST_PHASE = 1


@dataclass
class Layer:
    """A Caffe layer in V2 form.

    Attributes:
        name: Layer name (weights are matched by it).
        type: V2 type string, e.g. "Convolution".
        bottoms: Input blob names.
        tops: Output blob names.
        msg: The decoded LayerParameter (or V1LayerParameter): `layer.msg.convolution_param` etc.
        line: Line in the prototxt where the layer starts, if known.
        v1: Whether it came from a V1 `layers` record.
    """

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    msg: Msg
    line: int | None = None
    v1: bool = False

    def param(self, name: str) -> Msg:
        """The `name` sub-message (e.g. "pooling_param"), or an empty one with defaults."""
        return getattr(self.msg, name)

    def describe(self) -> str:
        return f"{self.name} ({self.type})"


def _in_test_phase(msg: Msg) -> bool:
    includes = msg.get("include", [])
    if includes and not any(r.get("phase", TEST_PHASE) == TEST_PHASE for r in includes):
        return False
    return not any(r.get("phase") == TEST_PHASE for r in msg.get("exclude", []))


def net_layers(net: Msg, *, phase_filter: bool = True) -> list[Layer]:
    """The net's layers (V2 `layer` records, then upgraded V1 `layers`), in order.

    Args:
        net: A decoded NetParameter.
        phase_filter: Drop layers that Caffe leaves out of a TEST-phase net.
    """
    out: list[Layer] = []
    for msg in net.get("layer", []):
        if phase_filter and not _in_test_phase(msg):
            continue
        out.append(Layer(msg.name, msg.type, list(msg.bottom), list(msg.top), msg, msg.get("_line")))
    for msg in net.get("layers", []):
        if phase_filter and not _in_test_phase(msg):
            continue
        type_name = V1_TYPES.get(msg.type, f"V1_TYPE_{msg.type}")
        out.append(Layer(msg.name, type_name, list(msg.bottom), list(msg.top), msg, msg.get("_line"), v1=True))
    return out
