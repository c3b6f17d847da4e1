"""Batched bipartite device-server graphs from the simulator's padded observations.

RLlib hands a module fixed-size tensors (it has no graph batches, see anchors §C7), so the
graph is rebuilt inside the module on every forward pass: the real devices and servers of
all B samples become the nodes of one disjoint-union graph, and every (real device, real
server) pair of a sample is an edge in both directions. Padding never becomes a node or an
edge, so a padded observation gives exactly the graph of the unpadded one. Everything is
vectorised over the batch (boolean masks, ``nonzero`` and index arithmetic; no Python loop
over samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BipartiteBatch:
    """B disjoint bipartite graphs; node ids are ``[real devices..., real servers...]``.

    ``pair_*`` index the padded ``(B, N_max, M_max)`` grid of the real device-server pairs,
    in the order of the first half of ``edge_index`` (device -> server); the second half is
    the same pairs reversed (server -> device).
    """

    device_mask: Tensor  # (B, N_max) bool
    server_mask: Tensor  # (B, M_max) bool
    num_devices: int  # real devices in the whole batch
    edge_index: Tensor  # (2, 2P) long
    pair_batch: Tensor  # (P,) long
    pair_device: Tensor  # (P,) long
    pair_server: Tensor  # (P,) long

    @property
    def num_pairs(self) -> int:
        return int(self.pair_batch.numel())


def build_bipartite(device_mask: Tensor, server_mask: Tensor) -> BipartiteBatch:
    """The graph structure from the observation's float masks (1 = real)."""
    dmask, smask = device_mask > 0.5, server_mask > 0.5
    num_devices = int(dmask.sum())
    # Node id of each real device/server in the union graph; -1 marks padding (never read).
    device_id = torch.full(dmask.shape, -1, dtype=torch.long, device=dmask.device)
    device_id[dmask] = torch.arange(num_devices, device=dmask.device)
    server_id = torch.full(smask.shape, -1, dtype=torch.long, device=smask.device)
    server_id[smask] = num_devices + torch.arange(int(smask.sum()), device=smask.device)

    pair_batch, pair_device, pair_server = (dmask[:, :, None] & smask[:, None, :]).nonzero(as_tuple=True)
    src = device_id[pair_batch, pair_device]
    dst = server_id[pair_batch, pair_server]
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    return BipartiteBatch(dmask, smask, num_devices, edge_index, pair_batch, pair_device, pair_server)


def to_padded(rows: Tensor, mask: Tensor) -> Tensor:
    """Scatter per-node rows (in mask order) back to a zero-padded ``(*mask.shape, H)`` tensor."""
    out = rows.new_zeros(*mask.shape, rows.shape[-1])
    out[mask] = rows
    return out
