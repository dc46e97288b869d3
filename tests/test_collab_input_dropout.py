"""AutoRec's input dropout: the mask (its fraction, scale, and that it is a function of the
epoch and the model's seed only), train mode only, the callback the learner adds and the
global kernel's input. Exact resume with it: test_collab_autorec.py."""

import numpy as np
import pytest
import torch
from conftest import grid_cf

from minifast.collab import AutoRec, InputDropout, autorec_learner
from minifast.collab.glocal import GLocalK, glocal_learner


def _ratings(seed=0, shape=(30, 40), density=0.5):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(1, 6, shape, generator=g).float()
    r[torch.rand(shape, generator=g) > density] = float("nan")
    return r


def test_input_dropout_must_be_a_fraction():
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(ValueError, match="input_dropout must be in \\[0, 1\\)"):
            AutoRec(_ratings(), n_hid=4, input_dropout=bad)


def test_one_dropout_check_for_every_model():
    from minifast.checks import check_dropout
    from minifast.collab import EmbeddingNet

    assert check_dropout(np.float32(0.25), "p") == 0.25 and check_dropout(0, "p") == 0.0
    for bad in (1, -0.1, float("nan"), "0.2", None):
        with pytest.raises(ValueError, match="p must be in \\[0, 1\\) \\(a dropout probability\\)"):
            check_dropout(bad, "p")
    with pytest.raises(ValueError, match="p2 must be in \\[0, 1\\) \\(a dropout probability\\), got 1.5"):
        EmbeddingNet(2, 3, 5, 0, 5, p2=1.5)


def test_the_mask_hides_p_scales_the_rest_and_depends_on_the_epoch_only():
    torch.manual_seed(0)
    model = AutoRec(_ratings(), n_hid=4, input_dropout=0.4)
    model.set_input_epoch(3)
    mask = model.input_mask
    assert mask.unique().tolist() == pytest.approx([0.0, 1 / 0.6])
    assert (mask == 0).float().mean().item() == pytest.approx(0.4, abs=0.05)
    model.set_input_epoch(4)
    assert not torch.equal(model.input_mask, mask)
    # another model with the same state (seed included) draws the same mask for epoch 3
    twin = AutoRec(_ratings(), n_hid=4, input_dropout=0.4)
    twin.load_state_dict(model.state_dict())
    twin.set_input_epoch(3)
    assert torch.equal(twin.input_mask, mask)


def test_the_mask_applies_in_training_only():
    model = AutoRec(_ratings(), n_hid=4, input_dropout=0.5)
    model.set_input_epoch(0)
    items = torch.arange(5)
    assert torch.equal(model.input_rows(items), model.inputs[items] * model.input_mask[:5])
    model.eval()
    assert torch.equal(model.input_rows(items), model.inputs[items])
    model.train()
    model.set_input_epoch(None)
    assert torch.equal(model.input_rows(), model.inputs)


def test_without_input_dropout_nothing_changes():
    model = AutoRec(_ratings(), n_hid=4)
    assert "input_seed" not in model.state_dict()
    model.set_input_epoch(2)
    assert model.input_mask is None


def test_fit_draws_a_mask_each_epoch_and_drops_it_at_the_end(tmp_path):
    cf = grid_cf(tmp_path)[0]
    val = np.arange(0, cf.n, 6)
    masks = []

    class Spy(InputDropout):  # runs after the learner's own InputDropout
        order = 1

        def on_epoch_begin(self):
            masks.append(self.state.model.input_mask.clone())

    learn = autorec_learner(cf, val, 4, n_hid=6, seed=0, input_dropout=0.3)
    learn.fit(1e-3, 3, callbacks=[Spy()], verbose=False, progress=False)
    assert len(masks) == 3 and not torch.equal(masks[0], masks[1])
    assert learn.model.input_mask is None
    plain = autorec_learner(cf, val, 4, n_hid=6, seed=0)
    plain.fit(1e-3, 3, verbose=False, progress=False)
    w, w_plain = learn.model.layers[0].W, plain.model.layers[0].W
    assert not torch.allclose(w, w_plain)  # the same start, other inputs


def test_the_global_kernel_sees_the_masked_matrix(tmp_path):
    torch.manual_seed(0)
    model = GLocalK(_ratings(), n_hid=4, input_dropout=0.5)
    model.use_global_kernel = True
    items = torch.arange(30)
    clean = model.reconstruct(items)
    model.set_input_epoch(0)
    masked = model.reconstruct(items)
    x = model.inputs * model.input_mask
    want = model.network(model.global_kernel.convolve(
        x, model.global_kernel(model.network(x))))
    assert torch.allclose(masked, want) and not torch.allclose(masked, clean)


def test_glocal_learner_takes_input_dropout(tmp_path):
    learn = glocal_learner(grid_cf(tmp_path)[0], [0, 1], n_hid=4, seed=0, input_dropout=0.2)
    assert learn.model.input_dropout == 0.2
