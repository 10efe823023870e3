"The CoMet trainer as a library user meets it: checkpoints on disk, bad checkpoints, bad configs, options."
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from comet_nb.meta import CoMet, CoMetConfig, load_checkpoint, atomic_save
from comet_nb.toy import GaussianModel, toy_data

FAST = dict(alpha=0.05, beta=0.05, epochs=3, batch_size=64)


@pytest.fixture
def data():
    return toy_data(60, 6, seed=0)[0]


def trained(data, **kw):
    torch.manual_seed(0)
    return CoMet(GaussianModel(), CoMetConfig(**{**FAST, **kw})).fit(data)


def test_save_is_atomic_and_loads(tmp_path, data):
    tr = trained(data)
    path = tr.save(tmp_path / "run" / "ckpt.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]  # no temporary file left
    back = CoMet.load(path, GaussianModel())
    assert back.epoch == 3 and torch.equal(back.model.mu, tr.model.mu)
    assert torch.equal(back.weights, tr.weights)


def test_failed_save_keeps_the_previous_file(tmp_path, data, monkeypatch):
    tr = trained(data)
    path = tr.save(tmp_path / "ckpt.pt")
    before = path.read_bytes()

    def disk_full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="previous file, if any, is unchanged"):
        tr.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_unwritable_folder_is_a_clear_error(tmp_path, data):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot create the folder"):
        trained(data).save(blocker / "ckpt.pt")


def test_truncated_checkpoint(tmp_path, data):
    path = trained(data).save(tmp_path / "ckpt.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        CoMet.load(path, GaussianModel())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ['EVIL_MARKER'])}",))


def test_loading_never_executes_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"format": "comet_nb.CoMet", "payload": Evil()}, path)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


class OtherModel(GaussianModel):
    pass


def test_checkpoint_of_another_model(tmp_path, data):
    path = trained(data).save(tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="holds a GaussianModel model, not a OtherModel"):
        CoMet.load(path, OtherModel())


def test_checkpoint_of_another_size(tmp_path, data):
    sd = trained(data).state_dict()
    tr3 = CoMet(GaussianModel(dim=3), CoMetConfig(**FAST))
    with pytest.raises(ValueError, match="do not fit this model"):
        tr3.load_state_dict(sd)


def test_not_a_checkpoint(tmp_path):
    path = atomic_save({"hello": torch.ones(2)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a comet_nb CoMet checkpoint"):
        CoMet.load(path, GaussianModel())


def test_resume_needs_the_same_training_set(data):
    tr = trained(data)
    with pytest.raises(ValueError, match="trained on 66 samples but got 20"):
        tr.fit(data[:20], epochs=5)


@pytest.mark.parametrize("kw, msg", [
    (dict(n_tasks=1), "n_tasks"), (dict(n_tasks=2.5), "n_tasks"), (dict(alpha=0), "alpha"), (dict(beta=-1), "beta"),
    (dict(gamma=-0.5), "gamma"), (dict(lambda0=float("nan")), "lambda0"), (dict(kappa=-1), "kappa"),
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"), (dict(validate_on="all"), "validate_on"),
])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        CoMetConfig(**kw)


def test_unknown_ablation():
    with pytest.raises(ValueError, match="unknown ablation"):
        CoMetConfig.ablation("w/o everything")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        CoMet(GaussianModel(), CoMetConfig(device="cuda"))


def test_single_sample_training_set():
    with pytest.raises(ValueError, match="at least 2"):
        CoMet(GaussianModel(), CoMetConfig(**FAST)).fit(torch.zeros(1, 2))


def test_first_order_and_complement_validation_train(data):
    base = trained(data)
    fo = trained(data, first_order=True)
    comp = trained(data, validate_on="complement")
    for tr in (fo, comp):
        assert tr.epoch == 3 and torch.isfinite(tr.model.mu).all()
    assert not torch.equal(fo.model.mu, base.model.mu)       # the second-order terms matter, if only a little
    assert not torch.equal(comp.model.mu, base.model.mu)


def test_dataset_objects_train_like_tensors(data):
    class DS(torch.utils.data.Dataset):
        def __len__(self): return len(data)
        def __getitem__(self, i): return data[i], 0          # tuples: the first item is the sample
    a, b = trained(data), trained(DS())
    assert torch.equal(a.model.mu, b.model.mu)


def test_progress_bar_callback(data, capsys):
    from comet_nb.meta import ProgressBar
    torch.manual_seed(0)
    CoMet(GaussianModel(), CoMetConfig(**FAST), callbacks=[ProgressBar()]).fit(data)
    assert "3/3" in capsys.readouterr().err


def test_request_stop_ends_after_the_epoch(data):
    from comet_nb.meta import Callback
    class StopAt2(Callback):
        def after_epoch(self, trainer, record):
            if record["epoch"] == 1: trainer.request_stop()
    torch.manual_seed(0)
    tr = CoMet(GaussianModel(), CoMetConfig(**{**FAST, "epochs": 10}), callbacks=[StopAt2()]).fit(data)
    assert tr.epoch == 2 and len(tr.history) == 2


class Scheduled(GaussianModel):
    def make_scheduler(self, opt, epochs): return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def test_scheduler_is_stepped_and_resumed(tmp_path, data):
    torch.manual_seed(0); whole = CoMet(Scheduled(), CoMetConfig(**{**FAST, "epochs": 6})).fit(data)
    torch.manual_seed(0); part = CoMet(Scheduled(), CoMetConfig(**{**FAST, "epochs": 6})).fit(data, epochs=3)
    part.save(tmp_path / "c.pt")
    back = CoMet.load(tmp_path / "c.pt", Scheduled()).fit(data)
    assert [r["lr"] for r in back.history] == [r["lr"] for r in whole.history] == [0.05, 0.025, 0.025, 0.0125, 0.0125, 0.00625]
    assert torch.equal(back.model.mu, whole.model.mu)


def test_small_batches_never_empty(data):
    tr = trained(data[:9], batch_size=1, n_tasks=4)                          # tasks of 3 and 2: no empty batch
    assert tr.epoch == 3


def test_dict_and_numpy_items(data):
    class Dicts(torch.utils.data.Dataset):
        def __len__(self): return len(data)
        def __getitem__(self, i): return {"image": data[i].numpy(), "label": 0}
    assert torch.equal(trained(Dicts()).model.mu, trained(data).model.mu)
    class NoImage(Dicts):
        def __getitem__(self, i): return {"x": data[i]}
    with pytest.raises(ValueError, match="under 'image'"):
        trained(NoImage())


def test_fit_seeds_training_randomness(data):
    torch.manual_seed(0); m1 = GaussianModel()
    torch.manual_seed(0); m2 = GaussianModel()
    torch.manual_seed(123); a = CoMet(m1, CoMetConfig(**FAST)).fit(data)
    torch.manual_seed(456); b = CoMet(m2, CoMetConfig(**FAST)).fit(data)   # global RNG differs before fit: same run
    assert torch.equal(a.model.mu, b.model.mu)


def test_resident_leaves_cpu_training_data_alone():
    "Features move to the device once only on CUDA; on a CPU (and for a Dataset) the very same object comes back."
    from comet_nb.meta import resident
    x = torch.randn(10, 3)
    assert resident(x, "cpu") is x and resident(x, torch.device("cpu")) is x
    ds = [x[i] for i in range(10)]
    assert resident(ds, "cpu") is ds
