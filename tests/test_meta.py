"The CoMet trainer as a library user meets it: checkpoints on disk, bad checkpoints, bad configs, options."
import os
import pickle
from pathlib import Path

import numpy as np
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
    (dict(n_tasks=2), "det Σ ≡ 0"), (dict(sigma="round"), "sigma must be"), (dict(sigma_window=0), "sigma_window"),
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


@pytest.mark.parametrize("use_meta", [True, False])
def test_a_callback_without_after_batch_still_works(data, use_meta):
    "A callback written before 0.7 (the four older hooks, no base class) sees every epoch and no error."
    class Epochs:
        def __init__(self): self.seen = []
        def before_fit(self, trainer): pass
        def after_round(self, trainer, info): pass
        def after_epoch(self, trainer, record): self.seen.append(record["epoch"])
        def after_fit(self, trainer): pass
    cb = Epochs()
    torch.manual_seed(0)
    CoMet(GaussianModel(), CoMetConfig(**FAST, use_meta=use_meta), callbacks=[cb]).fit(data)
    assert cb.seen == [0, 1, 2]


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


def test_two_tasks_are_fine_where_sigma_is_not_the_rounds():
    "Two tasks only break the paper's Σ: without the model side, or with the pooled Σ, they train."
    for kw in (dict(scl_model=False), dict(sigma="pooled"), dict(use_meta=False)):
        assert CoMetConfig(n_tasks=2, **kw).n_tasks == 2


class ScoresApart(GaussianModel):
    "forward's scores (training) differ from `score` (inference), and forward draws a random number."
    def forward(self, x):
        loss, m = super().forward(x)
        return loss, m + torch.rand(len(x))
    def score(self, x):
        with torch.no_grad(): return -super().forward(x)[1]


def test_weights_come_from_the_models_score(data):
    "The whole-set scores (and so the weights) are the model's inference `score`, and scoring draws no random numbers."
    torch.manual_seed(0)
    m = ScoresApart()
    expected = m.score(data)
    tr = CoMet(m, CoMetConfig(**{**FAST, "epochs": 1}))
    assert torch.allclose(tr.scores(data), expected)
    state = torch.get_rng_state()
    tr.scores(data)
    assert torch.equal(torch.get_rng_state(), state)
    tr.fit(data)
    assert torch.allclose(tr.history[0]["scores"], expected)


def test_validation_weights_are_the_epochs_weights(data):
    "Eq. 9 weighs a validation batch with the epoch's whole-set weights of exactly its samples, by index."
    from comet_nb.meta import Callback
    seen = []
    class Spy(Callback):                                                # the validation batches each round used
        def after_batch(self, trainer, info): seen.append([(x.clone(), w.clone()) for x, w in info["val"]])
    x = torch.cat([data, data[:3] + 40])                                # three far contaminants
    row = {tuple(r.tolist()): i for i, r in enumerate(x)}
    assert len(row) == len(x)
    torch.manual_seed(0)
    tr = CoMet(GaussianModel(), CoMetConfig(**{**FAST, "epochs": 1, "kappa": 0.0}), callbacks=[Spy()]).fit(x)
    w = tr.history[0]["weights"]
    assert (w < 1).sum() > 3 and seen
    for xv, wv in (p for r in seen for p in r):
        idx = torch.tensor([row[tuple(r.tolist())] for r in xv])
        assert torch.equal(wv, w[idx])                                  # each sample's own weight of this epoch


def test_l2_that_swamps_the_data_loss_warns_with_numbers(data):
    from comet_nb.meta import L2DominatesWarning
    big = GaussianModel()
    with torch.no_grad(): big.mu.fill_(30.)                               # ‖θ‖² = 1800: λ0‖θ‖² = 9 against a data loss of a few
    far = data + 30                                                      # the data where the model is
    with pytest.warns(L2DominatesWarning, match=r"λ‖θ‖² = .* against a data loss of .*λ0 ≈"):
        CoMet(big, CoMetConfig(**{**FAST, "epochs": 1, "lambda0": 0.005})).fit(far)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", L2DominatesWarning)
        trained(data, epochs=1)                                          # ‖θ‖² ≈ 0 at the start: no warning
        torch.manual_seed(0); CoMet(big, CoMetConfig.baseline(**{**FAST, "epochs": 1})).fit(far)   # λ0 = 0: no warning


def test_pooled_sigma_moves_lambda_and_resumes_exactly(tmp_path, data):
    "sigma='pooled': λ/λ0 − 1 is of order γ (not 1e-6), and a resumed run equals an uninterrupted one (the pooled pairs are checkpointed)."
    kw = dict(sigma="pooled", sigma_window=4, epochs=4, batch_size=8, gamma=0.5)
    full = trained(data, **kw)
    lam = torch.tensor([r["lam"] for r in full.history]) / full.cfg.lambda0 - 1
    assert (lam > 1e-3).all() and (lam <= 0.5 + 1e-9).all()
    paper = trained(data, **{**kw, "sigma": "paper"})
    assert max(r["lam"] for r in paper.history) / paper.cfg.lambda0 - 1 < lam.min()
    torch.manual_seed(0)
    first = CoMet(GaussianModel(), CoMetConfig(**{**FAST, **kw})).fit(data, epochs=2)
    path = first.save(tmp_path / "ckpt.pt")
    assert len(load_checkpoint(path)["sigma_pairs"]) == 3                 # window 4: three earlier rounds kept
    back = CoMet.load(path, GaussianModel()).fit(data)
    assert [r["lam"] for r in back.history] == [r["lam"] for r in full.history]
    assert torch.equal(back.model.mu, full.model.mu)


def test_l2_warning_without_meta_learning_too(data):
    "The 'w/o ML' row trains plain minibatches on Eq. 6: the same first-step check applies."
    from comet_nb.meta import L2DominatesWarning
    big = GaussianModel()
    with torch.no_grad(): big.mu.fill_(30.)
    with pytest.warns(L2DominatesWarning, match="λ0 = 0.005"):
        CoMet(big, CoMetConfig.ablation("w/o ML", **{**FAST, "epochs": 1, "lambda0": 0.005})).fit(data + 30)


def test_old_meta_loss_calls_get_a_clear_error():
    from comet_nb.meta import meta_loss, trainable_params
    m = GaussianModel(); x = torch.randn(4, 2)
    cfg = CoMetConfig(**FAST)
    with pytest.raises(ValueError, match=r"one \(x_v, w_v\) pair per task"):
        meta_loss(m, trainable_params(m), {}, [(x, torch.ones(4))] * 4, [x] * 4, 0.01, cfg)


def test_the_papers_sigma_keeps_no_pairs(tmp_path, data):
    "Only sigma='pooled' remembers earlier rounds; a run with the paper's Σ checkpoints none."
    tr = trained(data, epochs=2, batch_size=8)
    assert len(tr._pairs) == 0
    assert load_checkpoint(tr.save(tmp_path / "c.pt"))["sigma_pairs"] == []


# ---- History: one CSV row per epoch, durable, resumable

def _epochs(path):
    from comet_nb.meta import read_history
    return [r["epoch"] for r in read_history(path)]


def test_history_writes_a_row_per_epoch_as_training_goes(tmp_path, data):
    from comet_nb.meta import Callback, History, HISTORY_COLUMNS, read_history
    path = tmp_path / "h.csv"
    seen = []
    class Peek(Callback):                                            # what a reader sees while the run goes on
        def after_epoch(self, trainer, record): seen.append(_epochs(path))
    torch.manual_seed(0)
    tr = CoMet(GaussianModel(), CoMetConfig(**{**FAST, "epochs": 4}), callbacks=[History(path), Peek()]).fit(data)
    assert seen == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(HISTORY_COLUMNS) and len(lines) == 5 and path.read_text().endswith("\n")
    rows = read_history(path)
    for r, rec in zip(rows, tr.history):
        assert all(r[k] == rec[k] for k in HISTORY_COLUMNS[:-2])
        assert r["mean_weight"] == pytest.approx(rec["weights"].double().mean().item()) and r["min_weight"] == rec["weights"].min().item()
    assert [p.name for p in tmp_path.iterdir()] == ["h.csv"]        # no temporary file left behind


def test_history_resume_after_a_crash_lists_every_epoch_once(tmp_path, data):
    from comet_nb.meta import Callback, History, SaveCheckpoint
    class Crash(Callback):
        def after_epoch(self, trainer, record):
            if trainer.epoch == 4: raise RuntimeError("killed")
    ck, hp = tmp_path / "c.pt", tmp_path / "h.csv"
    cfg = CoMetConfig(**{**FAST, "epochs": 6})
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="killed"):
        CoMet(GaussianModel(), cfg, callbacks=[SaveCheckpoint(ck, every=3), History(hp), Crash()]).fit(data)
    assert _epochs(hp) == [0, 1, 2, 3]                                # one epoch beyond the checkpoint's three
    back = CoMet.load(ck, GaussianModel(), callbacks=[History(hp)]).fit(data)
    assert _epochs(hp) == list(range(6)) and back.epoch == 6


def test_history_rows_beyond_the_checkpoint_are_dropped_on_resume(tmp_path, data):
    "The brief's recipe: 3 epochs checkpointed every epoch, a history file holding rows past the checkpoint, resume to 5."
    from comet_nb.meta import History, SaveCheckpoint, read_history
    ck, hp = tmp_path / "c.pt", tmp_path / "h.csv"
    torch.manual_seed(0)
    CoMet(GaussianModel(), CoMetConfig(**{**FAST, "epochs": 3}), callbacks=[SaveCheckpoint(ck, every=1), History(hp)]).fit(data)
    text = hp.read_text()
    body = [line[line.index(","):] for line in text.splitlines()[1:3]]
    hp.write_text(text + "".join(f"{e}{b}\n" for e, b in zip((3, 4), body)))      # rows of epochs past the checkpoint
    assert _epochs(hp) == [0, 1, 2, 3, 4]
    back = CoMet.load(ck, GaussianModel(), callbacks=[History(hp)]).fit(data, epochs=5)
    rows = read_history(hp)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["loss"] for r in rows] == [r["loss"] for r in back.history]


@pytest.mark.parametrize("where, exc, msg", [
    ("folder", IsADirectoryError, "is a folder: give a file name"),
    ("under_a_file", NotADirectoryError, "is a file, not a folder"),
    ("someone_elses", FileExistsError, "not a comet_nb history CSV"),
    ("unwritable", PermissionError, "is not writable"),
])
def test_history_bad_path_is_a_clear_error_before_any_work(tmp_path, monkeypatch, where, exc, msg):
    from comet_nb import meta
    (tmp_path / "blocker").write_text("x")
    (tmp_path / "mine.csv").write_text("name,score\na,1\n")
    path = dict(folder=tmp_path, under_a_file=tmp_path / "blocker" / "h.csv", someone_elses=tmp_path / "mine.csv",
                unwritable=tmp_path / "ro" / "h.csv")[where]
    if where == "unwritable":
        (tmp_path / "ro").mkdir()
        real = os.access
        monkeypatch.setattr(meta.os, "access", lambda p, mode, *a, **k: False if Path(p) == tmp_path / "ro" else real(p, mode, *a, **k))
    with pytest.raises(exc, match=msg):
        meta.History(path)
    assert (tmp_path / "mine.csv").read_text() == "name,score\na,1\n"


def test_history_file_replaced_by_another_during_the_run_is_not_overwritten(tmp_path, data):
    from comet_nb.meta import Callback, History
    hp = tmp_path / "h.csv"
    class Swap(Callback):
        def after_epoch(self, trainer, record):
            if trainer.epoch == 1: hp.unlink(); hp.write_text("someone else's\n")
    torch.manual_seed(0)
    with pytest.raises(FileExistsError, match="would overwrite it"):
        CoMet(GaussianModel(), CoMetConfig(**FAST), callbacks=[History(hp), Swap()]).fit(data)
    assert hp.read_text() == "someone else's\n"


def test_read_history_bad_files(tmp_path):
    from comet_nb.meta import read_history, HISTORY_COLUMNS
    with pytest.raises(FileNotFoundError, match="no history file at"):
        read_history(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(HISTORY_COLUMNS) + "\n" + ",".join(["1"] * 15) + ",oops\n")
    with pytest.raises(ValueError, match="line 2: not a row of numbers"):
        read_history(bad)


def test_training_curves_from_csv_rows_and_trainer(tmp_path, data):
    import matplotlib.text
    from comet_nb.meta import History, training_curves
    torch.manual_seed(0)
    tr = CoMet(GaussianModel(), CoMetConfig(**{**FAST, "epochs": 4}), callbacks=[History(tmp_path / "h.csv")]).fit(data)
    a, b = training_curves(tmp_path / "h.csv"), training_curves(tr.history)
    assert len(a.axes) == 6 and all(ax.get_title() for ax in a.axes)
    for fa, fb in zip(a.axes, b.axes):
        for la, lb in zip(fa.lines, fb.lines): assert np.allclose(la.get_ydata(), lb.get_ydata(), equal_nan=True)
    assert a.axes[4].lines[0].get_ydata()[-1] == pytest.approx(tr.weights.double().mean().item())
    assert min(t.get_fontsize() for t in a.findobj(matplotlib.text.Text) if t.get_text()) >= 9
    for bad, msg in (([], "no epochs yet"), (42, "history must be")):
        with pytest.raises(ValueError, match=msg): training_curves(bad)


# ---- devices that do not exist

@pytest.mark.parametrize("n, device, msg", [
    (1, "cuda:7", "device 'cuda:7' does not exist: this machine has 1 GPU (cuda:0). Use --device cuda:0, or auto."),
    (2, "cuda:2", "this machine has 2 GPUs (cuda:0, cuda:1). Use --device one of cuda:0, cuda:1, or auto."),
    (8, "cuda:9", "this machine has 8 GPUs (cuda:0 … cuda:7)"),
    (0, "cuda:7", "device 'cuda:7' does not exist: this machine has no CUDA GPU"),
])
def test_a_gpu_index_beyond_the_machine_is_refused_before_any_work(monkeypatch, n, device, msg):
    from comet_nb.meta import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ValueError) as e:
        resolve_device(device)
    assert msg in str(e.value)
    with pytest.raises(ValueError, match="does not exist"):
        CoMet(GaussianModel(), CoMetConfig(device=device))                 # the trainer refuses it when built


def test_existing_gpus_and_cuda_visible_devices(monkeypatch):
    from comet_nb.meta import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(ValueError, match=r"CUDA_VISIBLE_DEVICES=3,5 limits and renumbers"):
        resolve_device("cuda:3")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("cuda:-1")
