"""GraphMAE: Hou, Liu, Cen, Dong, Yang, Wang, Tang, "GraphMAE: Self-Supervised Masked Graph Autoencoders",
KDD 2022 (arXiv:2205.10803).

Reconstruct masked node features, not edges:

1. masking: ``mask_rate`` of each graph's nodes (drawn per sample in the data workers, the graph views'
   ``node_mask``) have their features replaced by a learned [MASK] vector;
2. encoding: the GNN (:mod:`selfsup.backbones.gnn`, GIN or GCN) embeds every node of the masked graph;
3. re-masking: a linear map takes the codes to the decoder's input, and the masked nodes' codes are set to
   zero again (the paper's [DMASK]), so the decoder must rebuild them from their neighbours' codes;
4. decoding: one GNN layer of the encoder's kind maps the codes back to node features;
5. loss: the scaled cosine error on the masked nodes (:func:`~selfsup.losses.scaled_cosine.scaled_cosine_error`,
   ``alpha`` 2).

No other augmentation. The exported encoder embeds nodes (node-level samples: their root) or mean-pools graphs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import Field

from selfsup.backbones.gnn import LAYERS, adjacency
from selfsup.losses.scaled_cosine import scaled_cosine_error
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.views import ViewSpec
from selfsup.views.graph import GraphViewSpec


class GraphMAEOptions(MethodOptions):
    mask_rate: float = Field(0.5, gt=0, lt=1)
    alpha: float = Field(2.0, ge=1)  # the scaled cosine error's exponent


@METHODS.register("graphmae")
class GraphMAE(Method):
    Options = GraphMAEOptions
    field_kind = "graph"
    test_options = {}

    def __init__(self, backbone: nn.Module, options: GraphMAEOptions):
        super().__init__()
        if getattr(backbone, "field_kind", "image") != "graph" or not hasattr(backbone, "forward_nodes"):
            raise ValueError(f"graphmae needs a graph encoder (backbone.name: gin_small or gcn_small), not "
                             f"{type(backbone).__name__}")
        self.options, self.backbone = options, backbone
        width, hidden = backbone.node_features, backbone.num_features
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.encoder_to_decoder = nn.Linear(hidden, hidden, bias=False)
        self.decoder = LAYERS[backbone.spec["layer"]](hidden, width, learn_eps=False)
        self.normalise = backbone.spec["layer"] == "gcn"
        self.views = ViewSpec(crops=(GraphViewSpec(count=1, node_mask_rate=options.mask_rate),))

    def forward(self, batch: dict) -> StepOutput:
        graphs = batch["views"][0]
        mask = graphs.node_mask
        x = torch.where(mask[:, None], self.mask_token.to(graphs.x.dtype), graphs.x)
        nodes = self.backbone.forward_nodes(graphs, x)
        codes = self.encoder_to_decoder(nodes).masked_fill(mask[:, None], 0.0)
        rebuilt = self.decoder(codes, adjacency(graphs.edge_index, codes.shape[0], self.normalise))
        loss = scaled_cosine_error(rebuilt[mask], graphs.x[mask], self.options.alpha)
        return StepOutput(loss=loss, embeddings=self.backbone.pool(graphs, nodes).detach())
