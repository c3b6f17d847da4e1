"""Batched bipartite device-server graphs from the simulator's padded observations.

RLlib hands a module fixed-size tensors (it has no graph batches, see anchors §C7), so the
graph is rebuilt inside the module on every forward pass. Every padded slot of all B samples
is a node (``[B*N_max device slots..., B*M_max server slots...]``, in row-major order, so the
node features are the padded tensors flattened), but only the (real device, real server)
pairs of a sample are edges, in both directions: a padding node has no edge, never sends a
message, and a padded observation gives the real nodes exactly the graph of the unpadded one.
No count of real nodes is ever read into Python, so a traced or exported network (ONNX)
serves every network size up to its padding. Everything is vectorised over the batch
(boolean masks, ``nonzero`` and index arithmetic; no Python loop over samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BipartiteBatch:
    """B disjoint bipartite graphs over the padded slots.

    ``pair_*`` index the padded ``(B, N_max, M_max)`` grid of the real device-server pairs,
    in the order of the first half of ``edge_index`` (device -> server); the second half is
    the same pairs reversed (server -> device).
    """

    device_mask: Tensor  # (B, N_max) bool
    server_mask: Tensor  # (B, M_max) bool
    edge_index: Tensor  # (2, 2P) long
    pair_batch: Tensor  # (P,) long
    pair_device: Tensor  # (P,) long
    pair_server: Tensor  # (P,) long

    @property
    def pairs(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.pair_batch, self.pair_device, self.pair_server


def build_bipartite(device_mask: Tensor, server_mask: Tensor) -> BipartiteBatch:
    """The graph structure from the observation's float masks (1 = real)."""
    dmask, smask = device_mask > 0.5, server_mask > 0.5
    (batch, n_max), m_max = dmask.shape, smask.shape[1]
    pair_batch, pair_device, pair_server = (dmask[:, :, None] & smask[:, None, :]).nonzero(as_tuple=True)
    src = pair_batch * n_max + pair_device
    dst = batch * n_max + pair_batch * m_max + pair_server
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    return BipartiteBatch(dmask, smask, edge_index, pair_batch, pair_device, pair_server)
