"""freeze / freeze_to / unfreeze over layer groups (fastai v0.7), BatchNorm of frozen groups
kept in eval mode."""

import pytest
import torch
from torch import nn

import minifast as mf


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.body(x))

    def layer_groups(self):
        return [self.body, self.head]


def learner(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g) * 3 + 1
    y = x.sum(1, keepdim=True)
    data = mf.ModelData(tmp_path, mf.ArrayLoader(x[:240], y[:240], batch_size=24, shuffle=True, seed=0),
                        mf.ArrayLoader(x[240:], y[240:], batch_size=60))
    return mf.Learner(data, Net())


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_freeze_to_leaves_the_frozen_group_and_its_batchnorm_alone(tmp_path):
    learn = learner(tmp_path)
    body, head = snapshot(learn.model.body), snapshot(learn.model.head)
    learn.freeze_to(1)
    learn.fit([1e-2, 1e-2], 1, verbose=False)
    after = snapshot(learn.model.body)
    assert all(torch.equal(body[k], after[k]) for k in body)  # weights and running stats
    assert not all(torch.equal(head[k], learn.model.head.state_dict()[k]) for k in head)
    learn.unfreeze()
    learn.fit([1e-3, 1e-2], 1, verbose=False)  # discriminative LRs, now for both groups
    trained = snapshot(learn.model.body)
    assert not torch.equal(after["0.weight"], trained["0.weight"])
    assert not torch.equal(after["1.running_mean"], trained["1.running_mean"])
    assert learn.sched.base_lrs[0] == 1e-3


def test_freeze_is_freeze_to_minus_one_and_frozen_groups_take_no_optimiser_state(tmp_path):
    learn = learner(tmp_path)
    learn.freeze()
    assert [p.requires_grad for p in learn.model.body.parameters()] == [False] * 4
    assert all(p.requires_grad for p in learn.model.head.parameters())
    learn.fit(1e-2, 1, verbose=False)
    with_state = {id(p) for p in learn.opt.state}
    assert not any(id(p) in with_state for p in learn.model.body.parameters())
    with pytest.raises(ValueError, match="layer-group index"):
        learn.freeze_to(1.5)
