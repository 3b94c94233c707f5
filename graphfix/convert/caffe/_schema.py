"""The part of `caffe.proto` graphfix reads, as plain tables (field name -> number, type, default).

Both readers use these tables: `_wire` by field number (caffemodel, binaryproto) and `_prototxt`
by field name. Numbers follow BVLC/caffe master plus the SSD fork's Permute (202) and Normalize
(206). Fields a converter never needs are left out: the binary reader skips unknown numbers
silently, the text reader skips unknown names with a warning, except the names in `IGNORED`
(fillers, learning-rate specs, data sources...), which are skipped silently.
"""

from __future__ import annotations

__all__ = ["Field", "MessageSchema", "Msg", "MESSAGES", "IGNORED", "V1_TYPES", "V1_PARAM_NUMBERS"]

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Field:
    """One field: `kind` is a scalar type ('int32', 'float', 'floats' = repeated float as numpy,
    'string', 'enum', ...) or 'message' with `message` naming the type."""

    name: str
    number: int
    kind: str
    repeated: bool = False
    default: Any = None
    message: str | None = None
    enum: dict[str, int] | None = None


@dataclass
class MessageSchema:
    """A message's fields by number and by name."""

    name: str
    by_number: dict[int, Field] = field(default_factory=dict)
    by_name: dict[str, Field] = field(default_factory=dict)


class Msg(dict):
    """A decoded message: a dict of the fields present; attribute access falls back to defaults.

    `msg.kernel_size` returns the value, or the schema default (`[]` for repeated fields, an empty
    `Msg` for sub-messages) when absent; `"kernel_size" in msg` tells whether it was set.
    """

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        super().__init__()
        self.type_name = type_name

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        f = MESSAGES[self.type_name].by_name.get(name)
        if f is None:
            raise AttributeError(f"{self.type_name} has no field {name!r}")
        if f.repeated:
            return []
        if f.message is not None:
            return Msg(f.message)
        return f.default


def _enum(*names: str, start: int = 0) -> dict[str, int]:
    return {n: i + start for i, n in enumerate(names)}


_PHASE = {"TRAIN": 0, "TEST": 1}
_ENGINE = {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}

# Message tables: name -> [(field, number, kind or message name, default, repeated, enum)]
# kind: a scalar kind, or "msg:<Message>".
R = True  # repeated
_TABLES: dict[str, list[tuple]] = {
    "BlobShape": [("dim", 1, "int64", None, R)],
    "BlobProto": [
        ("shape", 7, "msg:BlobShape"),
        ("data", 5, "floats", None, R),
        ("double_data", 8, "doubles", None, R),
        ("num", 1, "int64", 0),
        ("channels", 2, "int64", 0),
        ("height", 3, "int64", 0),
        ("width", 4, "int64", 0),
    ],
    "NetStateRule": [("phase", 1, "enum", None, False, _PHASE), ("min_level", 2, "int32"), ("max_level", 3, "int32")],
    "NetParameter": [
        ("name", 1, "string", ""),
        ("input", 3, "string", None, R),
        ("input_dim", 4, "int32", None, R),
        ("input_shape", 8, "msg:BlobShape", None, R),
        ("layer", 100, "msg:LayerParameter", None, R),
        ("layers", 2, "msg:V1LayerParameter", None, R),
    ],
    "TransformationParameter": [
        ("scale", 1, "float", 1.0),
        ("mirror", 2, "bool", False),
        ("crop_size", 3, "uint32", 0),
        ("mean_file", 4, "string", ""),
        ("mean_value", 5, "floats", None, R),
        ("force_color", 6, "bool", False),
        ("force_gray", 7, "bool", False),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", 0),
        ("bias_term", 2, "bool", True),
        ("pad", 3, "uint32", None, R),
        ("kernel_size", 4, "uint32", None, R),
        ("stride", 6, "uint32", None, R),
        ("dilation", 18, "uint32", None, R),
        ("pad_h", 9, "uint32", 0),
        ("pad_w", 10, "uint32", 0),
        ("kernel_h", 11, "uint32", 0),
        ("kernel_w", 12, "uint32", 0),
        ("stride_h", 13, "uint32", 0),
        ("stride_w", 14, "uint32", 0),
        ("group", 5, "uint32", 1),
        ("engine", 15, "enum", 0, False, _ENGINE),
        ("axis", 16, "int32", 1),
        ("force_nd_im2col", 17, "bool", False),
    ],
    "PoolingParameter": [
        ("pool", 1, "enum", 0, False, _enum("MAX", "AVE", "STOCHASTIC")),
        ("kernel_size", 2, "uint32", 0),
        ("stride", 3, "uint32", 1),
        ("pad", 4, "uint32", 0),
        ("kernel_h", 5, "uint32", 0),
        ("kernel_w", 6, "uint32", 0),
        ("stride_h", 7, "uint32", 0),
        ("stride_w", 8, "uint32", 0),
        ("pad_h", 9, "uint32", 0),
        ("pad_w", 10, "uint32", 0),
        ("engine", 11, "enum", 0, False, _ENGINE),
        ("global_pooling", 12, "bool", False),
        ("round_mode", 13, "enum", 0, False, _enum("CEIL", "FLOOR")),
    ],
    "InnerProductParameter": [
        ("num_output", 1, "uint32", 0),
        ("bias_term", 2, "bool", True),
        ("axis", 5, "int32", 1),
        ("transpose", 6, "bool", False),
    ],
    "ReLUParameter": [("negative_slope", 1, "float", 0.0), ("engine", 2, "enum", 0, False, _ENGINE)],
    "PReLUParameter": [("channel_shared", 2, "bool", False)],
    "ELUParameter": [("alpha", 1, "float", 1.0)],
    "ClipParameter": [("min", 1, "float", None), ("max", 2, "float", None)],
    "ThresholdParameter": [("threshold", 1, "float", 0.0)],
    "PowerParameter": [("power", 1, "float", 1.0), ("scale", 2, "float", 1.0), ("shift", 3, "float", 0.0)],
    "ExpParameter": [("base", 1, "float", -1.0), ("scale", 2, "float", 1.0), ("shift", 3, "float", 0.0)],
    "LogParameter": [("base", 1, "float", -1.0), ("scale", 2, "float", 1.0), ("shift", 3, "float", 0.0)],
    "LRNParameter": [
        ("local_size", 1, "uint32", 5),
        ("alpha", 2, "float", 1.0),
        ("beta", 3, "float", 0.75),
        ("norm_region", 4, "enum", 0, False, _enum("ACROSS_CHANNELS", "WITHIN_CHANNEL")),
        ("k", 5, "float", 1.0),
        ("engine", 6, "enum", 0, False, _ENGINE),
    ],
    "BatchNormParameter": [
        ("use_global_stats", 1, "bool", None),
        ("moving_average_fraction", 2, "float", 0.999),
        ("eps", 3, "float", 1e-5),
    ],
    "ScaleParameter": [("axis", 1, "int32", 1), ("num_axes", 2, "int32", 1), ("bias_term", 4, "bool", False)],
    "BiasParameter": [("axis", 1, "int32", 1), ("num_axes", 2, "int32", 1)],
    "EltwiseParameter": [
        ("operation", 1, "enum", 1, False, _enum("PROD", "SUM", "MAX")),
        ("coeff", 2, "floats", None, R),
        ("stable_prod_grad", 3, "bool", True),
    ],
    "ConcatParameter": [("concat_dim", 1, "uint32", None), ("axis", 2, "int32", 1)],
    "SliceParameter": [
        ("slice_dim", 1, "uint32", None),
        ("slice_point", 2, "uint32", None, R),
        ("axis", 3, "int32", 1),
    ],
    "SoftmaxParameter": [("engine", 1, "enum", 0, False, _ENGINE), ("axis", 2, "int32", 1)],
    "DropoutParameter": [("dropout_ratio", 1, "float", 0.5)],
    "FlattenParameter": [("axis", 1, "int32", 1), ("end_axis", 2, "int32", -1)],
    "ReshapeParameter": [("shape", 1, "msg:BlobShape"), ("axis", 2, "int32", 0), ("num_axes", 3, "int32", -1)],
    "PermuteParameter": [("order", 1, "uint32", None, R)],
    "NormalizeParameter": [
        ("across_spatial", 1, "bool", True),
        ("channel_shared", 3, "bool", True),
        ("eps", 4, "float", 1e-10),
    ],
    "InputParameter": [("shape", 1, "msg:BlobShape", None, R)],
    "ArgMaxParameter": [("out_max_val", 1, "bool", False), ("top_k", 2, "uint32", 1), ("axis", 3, "int32", None)],
    "PythonParameter": [("module", 1, "string", ""), ("layer", 2, "string", "")],
    "CropParameter": [("axis", 1, "int32", 2), ("offset", 2, "uint32", None, R)],
    "MVNParameter": [
        ("normalize_variance", 1, "bool", True),
        ("across_channels", 2, "bool", False),
        ("eps", 3, "float", 1e-9),
    ],
    "ReductionParameter": [
        ("operation", 1, "enum", 1, False, {"SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4}),
        ("axis", 2, "int32", 0),
        ("coeff", 3, "float", 1.0),
    ],
    "TileParameter": [("axis", 1, "int32", 1), ("tiles", 2, "int32", 1)],
}

#: `*_param` fields of LayerParameter that graphfix reads: name -> (V2 number, message).
_LAYER_PARAMS: dict[str, tuple[int, str]] = {
    "transform_param": (100, "TransformationParameter"),
    "argmax_param": (103, "ArgMaxParameter"),
    "concat_param": (104, "ConcatParameter"),
    "convolution_param": (106, "ConvolutionParameter"),
    "dropout_param": (108, "DropoutParameter"),
    "eltwise_param": (110, "EltwiseParameter"),
    "exp_param": (111, "ExpParameter"),
    "inner_product_param": (117, "InnerProductParameter"),
    "mvn_param": (120, "MVNParameter"),
    "lrn_param": (118, "LRNParameter"),
    "pooling_param": (121, "PoolingParameter"),
    "power_param": (122, "PowerParameter"),
    "relu_param": (123, "ReLUParameter"),
    "softmax_param": (125, "SoftmaxParameter"),
    "slice_param": (126, "SliceParameter"),
    "threshold_param": (128, "ThresholdParameter"),
    "python_param": (130, "PythonParameter"),
    "prelu_param": (131, "PReLUParameter"),
    "reshape_param": (133, "ReshapeParameter"),
    "log_param": (134, "LogParameter"),
    "flatten_param": (135, "FlattenParameter"),
    "reduction_param": (136, "ReductionParameter"),
    "tile_param": (138, "TileParameter"),
    "batch_norm_param": (139, "BatchNormParameter"),
    "elu_param": (140, "ELUParameter"),
    "bias_param": (141, "BiasParameter"),
    "scale_param": (142, "ScaleParameter"),
    "input_param": (143, "InputParameter"),
    "crop_param": (144, "CropParameter"),
    "clip_param": (148, "ClipParameter"),
    "permute_param": (202, "PermuteParameter"),
    "norm_param": (206, "NormalizeParameter"),
}

#: V1LayerParameter `*_param` numbers (the nested messages are the V2 ones).
V1_PARAM_NUMBERS: dict[str, int] = {
    "concat_param": 9,
    "convolution_param": 10,
    "dropout_param": 12,
    "inner_product_param": 17,
    "lrn_param": 18,
    "pooling_param": 19,
    "power_param": 21,
    "argmax_param": 23,
    "eltwise_param": 24,
    "threshold_param": 25,
    "relu_param": 30,
    "slice_param": 31,
    "transform_param": 36,
    "softmax_param": 39,
    "exp_param": 41,
    "mvn_param": 34,
}

#: V1 LayerType enum -> V2 type string.
V1_TYPES: dict[int, str] = {
    0: "NONE", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col", 12: "ImageData",
    13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 16: "MultinomialLogisticLoss", 17: "Pooling",
    18: "ReLU", 19: "Sigmoid", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 23: "TanH",
    24: "WindowData", 25: "Eltwise", 26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss",
    29: "MemoryData", 30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN",
    35: "AbsVal", 36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}  # fmt: skip
_V1_ENUM_NAMES = {
    "NONE": 0, "ACCURACY": 1, "BNLL": 2, "CONCAT": 3, "CONVOLUTION": 4, "DATA": 5, "DROPOUT": 6,
    "EUCLIDEAN_LOSS": 7, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "IM2COL": 11, "IMAGE_DATA": 12,
    "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MULTINOMIAL_LOGISTIC_LOSS": 16, "POOLING": 17,
    "RELU": 18, "SIGMOID": 19, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "TANH": 23,
    "WINDOW_DATA": 24, "ELTWISE": 25, "POWER": 26, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "HINGE_LOSS": 28,
    "MEMORY_DATA": 29, "ARGMAX": 30, "THRESHOLD": 31, "DUMMY_DATA": 32, "SLICE": 33, "MVN": 34,
    "ABSVAL": 35, "SILENCE": 36, "CONTRASTIVE_LOSS": 37, "EXP": 38, "DECONVOLUTION": 39,
}  # fmt: skip

_TABLES["LayerParameter"] = [
    ("name", 1, "string", ""),
    ("type", 2, "string", ""),
    ("bottom", 3, "string", None, R),
    ("top", 4, "string", None, R),
    ("blobs", 7, "msg:BlobProto", None, R),
    ("include", 8, "msg:NetStateRule", None, R),
    ("exclude", 9, "msg:NetStateRule", None, R),
    ("phase", 10, "enum", 0, False, _PHASE),
] + [(name, num, f"msg:{msg}") for name, (num, msg) in _LAYER_PARAMS.items()]
_TABLES["V1LayerParameter"] = [
    ("name", 4, "string", ""),
    ("type", 5, "enum", 0, False, _V1_ENUM_NAMES),
    ("bottom", 2, "string", None, R),
    ("top", 3, "string", None, R),
    ("blobs", 6, "msg:BlobProto", None, R),
    ("include", 32, "msg:NetStateRule", None, R),
    ("exclude", 33, "msg:NetStateRule", None, R),
] + [
    (name, V1_PARAM_NUMBERS[name], f"msg:{msg}") for name, (_, msg) in _LAYER_PARAMS.items() if name in V1_PARAM_NUMBERS
]

#: Field names skipped silently by the text reader (known to Caffe, never needed to convert).
IGNORED: dict[str, set[str]] = {
    "NetParameter": {"force_backward", "state", "debug_info"},
    "LayerParameter": {
        "param", "loss_weight", "propagate_down", "loss_param", "accuracy_param", "contrastive_loss_param",
        "data_param", "dummy_data_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
        "image_data_param", "infogain_loss_param", "memory_data_param", "sigmoid_param",
        "tanh_param", "window_data_param", "spp_param", "embed_param",
        "parameter_param", "recurrent_param", "swish_param", "annotated_data_param",
        "multibox_loss_param", "prior_box_param", "detection_output_param", "detection_evaluate_param",
    },
    "V1LayerParameter": {
        "blobs_lr", "weight_decay", "loss_weight", "param", "blob_share_mode", "data_param", "hdf5_data_param",
        "hdf5_output_param", "image_data_param", "infogain_loss_param", "memory_data_param", "window_data_param",
        "dummy_data_param", "accuracy_param", "hinge_loss_param", "tanh_param", "sigmoid_param",
        "contrastive_loss_param", "loss_param", "layer",
    },
    "ConvolutionParameter": {"weight_filler", "bias_filler"},
    "InnerProductParameter": {"weight_filler", "bias_filler"},
    "PReLUParameter": {"filler"},
    "ScaleParameter": {"filler", "bias_filler"},
    "BiasParameter": {"filler"},
    "NormalizeParameter": {"scale_filler"},
    "PythonParameter": {"param_str", "share_in_parallel"},
    "NetStateRule": {"stage", "not_stage"},
}  # fmt: skip


def _build() -> dict[str, MessageSchema]:
    out: dict[str, MessageSchema] = {}
    for name, rows in _TABLES.items():
        schema = MessageSchema(name)
        for row in rows:
            fname, number, kind = row[0], row[1], row[2]
            default = row[3] if len(row) > 3 else None
            repeated = bool(row[4]) if len(row) > 4 else False
            enum = row[5] if len(row) > 5 else None
            message = kind[4:] if kind.startswith("msg:") else None
            f = Field(fname, number, "message" if message else kind, repeated, default, message, enum)
            schema.by_number[number] = f
            schema.by_name[fname] = f
        out[name] = schema
    return out


#: Every message graphfix reads, by name.
MESSAGES: dict[str, MessageSchema] = _build()
