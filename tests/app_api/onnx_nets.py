"""A small network the ONNX exporter gets wrong, for export-onnx's refusal test: it
pools rows into classes with ``index_add_``, which the exporter writes as a scatter that
keeps one row per class instead of their sum (the demo model's head did this before)."""

from __future__ import annotations

import torch
from torch import nn


class IndexAddPool(nn.Module):
    def __init__(self, rows: int = 33, classes: int = 11):
        super().__init__()
        self.linear = nn.Linear(8, rows)
        self.register_buffer("group", torch.arange(rows) % classes)
        self.classes = classes

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        z = self.linear(f)
        return torch.zeros(z.shape[0], self.classes).index_add_(1, self.group, z)


class IndexAddNet(nn.Module):
    """``features`` + ``classifier``, as the API's FeatureClassifier expects."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU())
        self.classifier = IndexAddPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(f)
