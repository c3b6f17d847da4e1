"""The refined channel ranking: greedy picks among the attention's shortlist, chosen by what the
tail needs, then the rest of the channels in attention order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grl_aecnn.codecs.aecnn import top_channels
from grl_aecnn.codecs.refine import ranking_scores, refined_ranking
from grl_aecnn.codecs.settings import CodecsConfig


class OneChannelTail(nn.Module):
    """Logits read from channel `index` alone: a set without it cannot serve the tail."""

    def __init__(self, index: int, classes: int = 10):
        super().__init__()
        self.index = index
        self.head = nn.Linear(64, classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z[:, self.index].flatten(1))


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 64, 8, 8, generator=gen).relu(), torch.randint(0, 10, (n,), generator=gen)


def test_greedy_picks_what_the_tail_reads_and_keeps_attention_order_after():
    torch.manual_seed(0)
    tail = OneChannelTail(index=5).eval()
    (train_z, _), (val_z, _) = _data(256, 0), _data(64, 1)
    with torch.no_grad():
        tail.head.weight.mul_(10)  # confident logits
        val_y = tail(val_z).argmax(1)  # labels the clean tail gets right
    attention = np.linspace(1.0, 0.5, 64)  # channel 0 first ... channel 63 last
    attention[5] = 0.9  # 13th: inside the shortlist of 16, far from its top
    cfg = CodecsConfig(aecnn={"bits": [2], "refine_shortlist": 16})
    ranking = refined_ranking(attention, tail, train_z, val_z, val_y, cfg, depth=3, seed=0)
    assert ranking[0] == 5
    assert sorted(ranking) == list(range(64))
    shortlist = [int(i) for i in np.argsort(-attention, kind="stable")[:16]]
    assert set(ranking[:3]) <= set(shortlist)
    attention_order = [int(i) for i in np.argsort(-attention, kind="stable")]
    assert ranking[3:] == [c for c in attention_order if c not in ranking[:3]]
    assert refined_ranking(attention, tail, train_z, val_z, val_y, cfg, depth=3, seed=0) == ranking
    # the attention alone keeps channels 0..3 for k=4; the refined ranking keeps channel 5
    assert 5 not in top_channels(attention, 4) and 5 in top_channels(ranking_scores(ranking), 4)


def test_ranking_scores_order_is_the_ranking():
    ranking = [3, 0, 2, 1]
    assert [int(i) for i in np.argsort(-ranking_scores(ranking), kind="stable")] == ranking
