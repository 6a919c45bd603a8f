"""The graph a training run sees, and where dataset files are looked for."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

DATA_ENV = "BENCH_SUITE_DATA"
DOWNLOAD_ENV = "BENCH_SUITE_DOWNLOAD"


def resolve_data_dir(data_dir: Optional[str | os.PathLike] = None) -> Optional[Path]:
    """``--data-dir`` if given, else ``$BENCH_SUITE_DATA``, else None."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().resolve() if env else None


@dataclass
class GraphData:
    """One node-classification problem with one split.

    ``graph`` is a DGL graph, symmetric, without self-loops or duplicate edges;
    models add the self-loops of Ã = A + I themselves.
    """

    name: str
    graph: "dgl.DGLGraph"  # noqa: F821
    features: torch.Tensor  # float32 [N, F]; a CSR tensor if loaded with sparse_features=True
    labels: torch.Tensor  # int64 [N]; -1 for unlabelled nodes
    train_mask: torch.Tensor  # bool [N]
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int
    split: str = "public"
    info: dict = field(default_factory=dict)
    #: the metric the dataset's literature reports: "accuracy" or "roc_auc" (binary, imbalanced)
    metric: str = "accuracy"

    @property
    def num_nodes(self) -> int:
        return int(self.graph.num_nodes())

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    def summary(self) -> dict:
        return {
            "name": self.name,
            "split": self.split,
            "nodes": self.num_nodes,
            "edges": int(self.graph.num_edges()),
            "features": self.num_features,
            "classes": self.num_classes,
            "train": int(self.train_mask.sum()),
            "val": int(self.val_mask.sum()),
            "test": int(self.test_mask.sum()),
            "metric": self.metric,
            **self.info,
        }
