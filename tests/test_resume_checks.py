"""Resume refuses what it cannot continue exactly: a checkpoint's fingerprint (data, split,
batch size, n_epochs, schedule, optimiser) must match the run resuming it."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from resume_worker import N_EPOCHS, InterruptAfterBatch, assert_same_run, build, result

from minifast import ArrayLoader, Checkpoint, CheckpointError, fit, load_checkpoint
from minifast.callbacks.schedules import CircularLR, CosAnneal


def run(out, change=None, opt="adam", n_epochs=N_EPOCHS, callbacks=(), **kw):
    """The worker's run; `change(data)` alters the data first."""
    model, o, data = build(out, opt)
    if change is not None:
        change(data)
    res = fit(model, data, n_epochs, o, F.mse_loss, callbacks=list(callbacks), verbose=False,
              progress=False, **kw)
    return model, o, res


@pytest.fixture
def ckpt(tmp_path):
    """A mid-epoch checkpoint (epoch 1, batch 5) of the worker's 3-epoch Adam run."""
    ck = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, callbacks=[Checkpoint(ck), InterruptAfterBatch(20)])
    return ck / "ckpt-00000020.pt"


def _batch_size(bs):
    def change(data):
        data.trn_dl = ArrayLoader(*data.trn_dl.tensors, batch_size=bs, shuffle=True)
    return change


def _permuted_targets(data):
    x, y = data.trn_dl.tensors
    data.trn_dl = ArrayLoader(x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))],
                              batch_size=16, shuffle=True)


def _other_split(data):
    (x, y), (vx, vy) = data.trn_dl.tensors, data.val_dl.tensors
    data.val_dl = ArrayLoader(torch.cat([vx[10:], x[:10]]), torch.cat([vy[10:], y[:10]]),
                              batch_size=32)


@pytest.mark.parametrize("change, what", [
    (_batch_size(17), "training data.batch size: 16 in the checkpoint, 17 now"),  # still 15 batches
    (_permuted_targets, "training data.hash: one content in the checkpoint, another now"),
    (_other_split, "validation data.hash: one content in the checkpoint, another now"),
])
def test_resume_into_other_data_is_refused_and_can_be_forced(tmp_path, ckpt, change, what):
    with pytest.raises(CheckpointError, match=r"set up differently \(.*" + what.replace(".", r"\.")
                       + r".*resume_strict=False"):
        run(tmp_path, change, resume=ckpt)
    with pytest.warns(UserWarning, match=r"resume_strict=False: resuming from .*" + what.split(":")[0]):
        _, _, res = run(tmp_path, change, resume=ckpt, resume_strict=False)
    assert res.state.iteration == 45


def test_same_data_resumes_without_a_word(tmp_path, ckpt):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, opt, res = run(tmp_path, resume=ckpt)
    full = run(tmp_path / "full")
    assert_same_run(result(*full[:2], full[2].recorder, full[2].history),
                    result(model, opt, res.recorder, res.history))


def test_adam_checkpoint_into_sgd_is_refused_clearly(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match=r"optimiser\.class: Adam in the checkpoint, SGD now"):
        run(tmp_path, opt="sgd", resume=ckpt)
    # forced, it still cannot continue: the state holds Adam's hyper-parameters, not SGD's
    # (before: torch's sgd.py died in the first step with KeyError: 'momentum')
    with pytest.raises(CheckpointError, match=r"another kind of optimiser than this SGD.*"
                       r"\['amsgrad', 'betas'.*lacks \['dampening', 'momentum', 'nesterov'\]"):
        with pytest.warns(UserWarning, match="resume_strict=False"):
            run(tmp_path, opt="sgd", resume=ckpt, resume_strict=False)


def test_learner_load_of_an_adam_file_into_sgd_is_refused(tmp_path):
    from functools import partial

    from minifast.learner import Learner

    model, _, data = build(tmp_path)
    Learner(data, model).save("adam", with_opt=True)
    sgd = Learner(data, model, opt_fn=partial(torch.optim.SGD, momentum=0.9))
    with pytest.raises(CheckpointError, match=r"adam\.pt: the optimiser state was saved by "
                       r"another kind of optimiser than this SGD.*with_opt=False"):
        sgd.load("adam", with_opt=True)
    sgd.load("adam", with_opt=False)  # the weights alone are fine
    sgd.fit(1e-2, 1, verbose=False, progress=False)


def test_other_n_epochs_continues_and_says_so(tmp_path):
    ck = tmp_path / "ckpt"
    run(tmp_path, n_epochs=2, callbacks=[Checkpoint(ck, keep=None)])
    first = ck / "ckpt-00000015.pt"  # the end of epoch 0 of 2
    # a shorter fit: nothing is left to train, and it says so (before: silently mid-run weights)
    with pytest.warns(UserWarning, match=r"epoch 1 \(iteration 15\) of a run of 2 epoch\(s\), "
                      r"which had not finished; this fit has 1 epoch\(s\), so there is nothing "
                      r"left to train") as rec:
        m, _, res = run(tmp_path, n_epochs=1, resume=first)
    assert any("another length (n_epochs: 2 in the checkpoint, 1 now)" in str(w.message)
               for w in rec)
    saved = load_checkpoint(first)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in m.state_dict().items())
    assert res.state.iteration == 15
    # a longer one trains on from the checkpoint
    with pytest.warns(UserWarning, match=r"n_epochs: 2 in the checkpoint, 3 now.*continues"):
        _, _, res = run(tmp_path, n_epochs=3, resume=first)
    assert res.state.iteration == 45 and len(res.history) == 3


def test_resuming_a_finished_run_says_so(tmp_path):
    ck = tmp_path / "ckpt"
    run(tmp_path, n_epochs=2, callbacks=[Checkpoint(ck)])
    with pytest.warns(UserWarning, match=r"epoch 2 \(iteration 30\) of a run of 2 epoch\(s\), "
                      r"which had finished.*nothing left to train"):
        _, _, res = run(tmp_path, n_epochs=2, resume=ck)
    assert res.state.iteration == 30 and len(res.history) == 2


def test_another_schedule_is_refused(tmp_path):
    ck = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, callbacks=[CosAnneal(30), Checkpoint(ck), InterruptAfterBatch(20)])
    with pytest.raises(CheckpointError, match=r"\(schedules: CosAnneal in the checkpoint, absent "
                       r"now; schedules: absent in the checkpoint, CircularLR now\)"):
        run(tmp_path, callbacks=[CircularLR(30)], resume=ck)
    with pytest.raises(CheckpointError, match=r"schedules\.CosAnneal\.cycle_mult: 1 in the "
                       r"checkpoint, 2 now"):
        run(tmp_path, callbacks=[CosAnneal(30, cycle_mult=2)], resume=ck)


def test_a_format_1_checkpoint_still_resumes_unchecked(tmp_path, ckpt):
    sd = load_checkpoint(ckpt)
    del sd["fingerprint"], sd["state"]["epoch_rng"]
    sd["version"] = 1
    torch.save(sd, tmp_path / "v1.pt")
    with pytest.warns(UserWarning, match=r"holds no fingerprint of its run \(checkpoint format 1\)"):
        model, opt, res = run(tmp_path, resume=tmp_path / "v1.pt")
    full = run(tmp_path / "full")
    assert_same_run(result(*full[:2], full[2].recorder, full[2].history),
                    result(model, opt, res.recorder, res.history))
