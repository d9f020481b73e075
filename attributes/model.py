"""The multi-dataset attribute model: one shared trunk, per-dataset (and shared-task) heads.

    model = build_attribute_model(ModelConfig(...), {"celeba": celeba_schema, "utkface": utk_schema})
    outputs, log_vars = model(images, [("celeba", 64), ("utkface", 64)])
    outputs["utkface"]["Age"]   # raw outputs of the Age group for the utkface slice

The trunk runs once on the concatenated batch of every dataset; each dataset's slice of the
feature map goes to its own sub-network and to the shared ones of the tasks it has. The
learned loss weights (Kendall et al.) live here too, returned by `forward`, so that
DistributedDataParallel sees them used and averages their gradients like any other parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from attributes.heads import HeadConfig, HeadSubnet, TaskGroup, plan_groups
from attributes.trunks import TrunkConfig, build_trunk, feature_shape
from data_prep.datasets.schema import LabelSchema

__all__ = ["ModelConfig", "AttributeModel", "AttributeEnsemble", "build_attribute_model", "check_layout"]


@dataclass
class ModelConfig:
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    # NHWC convolution weights: the same maths, and with oneDNN on the CPU a training step of the
    # 64 px AlexNet-BN runs about 1.4x faster (benchmarks/attributes_throughput.py). Inputs stay NCHW.
    channels_last: bool = True


class AttributeModel(nn.Module):
    def __init__(self, trunk: nn.Module, input_size: int, groups: dict[str, list[TaskGroup]], head: HeadConfig,
                 schemas: dict[str, LabelSchema]):
        super().__init__()
        self.trunk = trunk
        self.input_size = input_size
        self.groups = groups
        self.schemas = schemas
        self.head_config = head
        channels, height, width = feature_shape(trunk, input_size)
        outputs: dict[str, dict[str, int]] = {}
        for dataset, dataset_groups in groups.items():
            for group in dataset_groups:
                known = outputs.setdefault(group.subnet, {})
                if group.name in known and known[group.name] != group.num_outputs:
                    raise ValueError(f"shared task {group.name!r} has different outputs across datasets")
                known[group.name] = group.num_outputs
        self.heads = nn.ModuleDict({
            _module_key(name): HeadSubnet(channels, (height, width), head, outs) for name, outs in outputs.items()
        })
        # One learned log-variance per (dataset, group) loss term; unused with fixed weights.
        self.loss_terms = [f"{d}/{g.name}" for d, gs in groups.items() for g in gs]
        self.log_vars = nn.Parameter(torch.zeros(len(self.loss_terms)))

    def forward(self, images: torch.Tensor, layout: list[tuple[str, int]], unlabelled: int = 0,
                return_features: bool = False, return_embeddings: bool = False):
        """`layout` lists (dataset, count) in the order the images are concatenated; the last
        `unlabelled` images go through the trunk only (domain-adversarial training uses their
        features). Returns (outputs, log_vars), then the trunk's feature map if
        `return_features`, then if `return_embeddings` each dataset's fc_feature vectors per
        sub-network, {dataset: {subnet: (count, feature_dim)}}, for the feature-space losses."""
        check_layout(images, layout, unlabelled)
        features = self.trunk(images)
        outputs: dict[str, dict[str, torch.Tensor]] = {}
        embeddings: dict[str, dict[str, torch.Tensor]] = {}
        start = 0
        for dataset, count in layout:
            part = features[start:start + count]
            start += count
            needed = {g.subnet for g in self.groups[dataset]}
            computed, embeddings[dataset] = {}, {}
            for subnet in needed:
                computed[subnet], embeddings[dataset][subnet] = self.heads[_module_key(subnet)](part, return_embedding=True)
            outputs[dataset] = {g.name: computed[g.subnet][g.name] for g in self.groups[dataset]}
        result = (outputs, self.log_vars * 1.0)
        if return_features:
            result += (features,)
        if return_embeddings:
            result += (embeddings,)
        return result

    def head_module(self, subnet: str) -> HeadSubnet:
        """The sub-network named `subnet` (a dataset's name, or "shared:<task>")."""
        return self.heads[_module_key(subnet)]

    def embed(self, images: torch.Tensor, subnet: str) -> torch.Tensor:
        """The fc_feature embedding (before dropout) of sub-network `subnet` for a batch of faces:
        what face verification compares and the feature-space losses shape."""
        return self.head_module(subnet)(self.trunk(images), return_embedding=True)[1]

    @property
    def feature_dim(self) -> int:
        """Size of every head's fc_feature embedding."""
        return self.head_config.feature_dim

    def classifier_weight(self, group: TaskGroup) -> torch.Tensor:
        """The output layer's weight rows of `group`'s real classes (not SA's "unrecognizable")."""
        weight = self.head_module(group.subnet).outputs[group.name].weight
        return weight[:group.num_classes]

    def describe(self) -> dict:
        """What the checkpoint needs to rebuild this model without the datasets."""
        return {
            "input_size": self.input_size,
            "schemas": {name: schema.to_dict() for name, schema in self.schemas.items()},
        }


class AttributeEnsemble(nn.Module):
    """Independently trained copies of one attribute model, averaged: what `members: K` trains.

    Every member sees the same faces and its raw outputs (binary and class logits, regression
    values, age-bin logits) are averaged, so decoding, thresholds, grades and reports treat the
    ensemble exactly like one model. It is for inference (`attributes eval` and `predict`);
    tools that reach into one network (Grad-CAM, pruning, verification) take a member's own
    checkpoint instead.
    """

    def __init__(self, members: list[AttributeModel]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        for k, member in enumerate(members[1:], start=1):
            if member.input_size != first.input_size or _layout(member) != _layout(first):
                raise ValueError(f"ensemble member {k} has other heads or input size than member 0")
        self.members = nn.ModuleList(members)
        self.groups = first.groups
        self.input_size = first.input_size
        self.schemas = first.schemas

    def forward(self, images: torch.Tensor, layout: list[tuple[str, int]], unlabelled: int = 0):
        """(outputs, log_vars) as `AttributeModel.forward`, each averaged over the members."""
        results = [member(images, layout, unlabelled) for member in self.members]
        outputs = {dataset: {name: torch.stack([r[0][dataset][name] for r in results]).mean(0) for name in groups}
                   for dataset, groups in results[0][0].items()}
        return outputs, torch.stack([r[1] for r in results]).mean(0)


def check_layout(images: torch.Tensor, layout: list[tuple[str, int]], unlabelled: int) -> None:
    """A batch must hold exactly the images its `layout` lists plus `unlabelled` more."""
    labelled = sum(count for _, count in layout)
    if labelled + unlabelled != images.shape[0]:
        raise ValueError(f"layout covers {labelled} images and {unlabelled} unlabelled ones, but the batch has "
                         f"{images.shape[0]}")


def _layout(model: AttributeModel) -> dict[str, list[tuple[str, int]]]:
    return {dataset: [(g.name, g.num_outputs) for g in groups] for dataset, groups in model.groups.items()}


def _module_key(subnet: str) -> str:
    return subnet.replace(":", "__").replace(".", "_")


def build_attribute_model(config: ModelConfig, schemas: dict[str, LabelSchema],
                          tasks: dict[str, list[str]] | None = None) -> AttributeModel:
    """The trunk of `config.trunk` with heads for every dataset's schema (restricted to `tasks`)."""
    trunk = build_trunk(config.trunk)
    groups = {name: plan_groups(name, schema, config.head, (tasks or {}).get(name)) for name, schema in schemas.items()}
    for name, dataset_groups in groups.items():
        if not dataset_groups:
            raise ValueError(f"dataset {name!r} has no tasks to learn")
    model = AttributeModel(trunk, config.trunk.input_size, groups, config.head, schemas)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
