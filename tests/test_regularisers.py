"""The AWD-LSTM regularisers: locked dropout, weight drop, embedding dropout, AR/TAR and averaged weights."""

import json
from pathlib import Path

import pytest
import torch
from torch.nn.utils import get_total_norm
from typer.testing import CliRunner

from bptt_cli.cli import app
from bptt_cli.errors import BpttError
from bptt_cli.modelfile import load_model_file
from bptt_cli.models import ModelConfig, RecurrentModel
from bptt_cli.streams import Window
from bptt_cli.trainer import SilentReporter, TrainConfig, Trainer, WindowStep

VOCAB = 12


def tiny_model(dropout=0.0, layers=2, seed=0) -> RecurrentModel:
    torch.manual_seed(seed)
    return RecurrentModel(ModelConfig(cell="lstm", input_size=VOCAB, output_size=VOCAB, embed=8, hidden=16,
                                      layers=layers, dropout=dropout))


def streams(steps: int = 200, batch: int = 4):
    ids = torch.randint(0, VOCAB, (steps + 1, batch), generator=torch.Generator().manual_seed(1))
    return ids[:-1], ids[1:]


def make_trainer(model=None, validate=None, checkpoints=None, saves=None, **options) -> Trainer:
    config = TrainConfig(**{"window": 10, "batch_size": 4, "epochs": 2, "log_every": 5, "seed": 3, **options})
    config.validate()
    store = (lambda c: checkpoints.append(_through_disk(c))) if checkpoints is not None else None
    save = (lambda record: saves.append(_weights(trainer.model))) if saves is not None else (lambda record: None)
    trainer = Trainer(model or tiny_model(), config, torch.device("cpu"), SilentReporter(), validate, save,
                      save_checkpoint=store)
    return trainer


def _through_disk(checkpoint: dict) -> dict:
    import io

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class FusedCalls:
    """torch.lstm (the per-layer fused function) wrapped: each call's inputs and weights are kept."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = torch.lstm

        def counted(inputs, hx, weights, *rest):
            self.calls.append((inputs.detach().clone(), [w.detach().clone() for w in weights]))
            return original(inputs, hx, weights, *rest)

        monkeypatch.setattr(torch, "lstm", counted)


def zero_pattern(x: torch.Tensor) -> torch.Tensor:
    """Which (stream, feature) entries are zero at each step: (T, B, F) booleans."""
    return x == 0


# -- locked dropout --------------------------------------------------------------------------------------------


def run_window(model, inputs, state, start=0, end=10) -> None:
    WindowStep(model)(inputs, state, Window(start, end, start, end))


def test_a_locked_mask_is_the_same_at_every_step_of_a_window_and_new_in_the_next(monkeypatch):
    model = tiny_model(dropout=0.5).train()
    model.regularisers = TrainConfig(dropout_kind="locked").regularisers()
    fused = FusedCalls(monkeypatch)
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    inputs, _ = streams(steps=40)
    state = model.init_state(4)
    run_window(model, inputs, state, 0, 20)
    run_window(model, inputs, state, 20, 40)
    assert len(fused.calls) == 4  # two layers, one fused call each, per window
    first_layer_in = [fused.calls[0][0], fused.calls[2][0]]  # dropped embeddings
    second_layer_in = [fused.calls[1][0], fused.calls[3][0]]  # dropped between the layers
    for site in (first_layer_in, second_layer_in, seen):
        masks = [zero_pattern(x) for x in site]
        for mask in masks:
            assert torch.equal(mask, mask[:1].expand_as(mask))  # constant across the window's steps
            assert 0.3 < mask[0].float().mean() < 0.7  # about half dropped
        assert not torch.equal(masks[0][0], masks[1][0])  # the next window draws a new one


def test_standard_dropout_draws_a_new_mask_at_every_step(monkeypatch):
    model = tiny_model(dropout=0.5).train()
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    inputs, _ = streams(steps=20)
    run_window(model, inputs, model.init_state(4), 0, 20)
    mask = zero_pattern(seen[0])
    assert not torch.equal(mask[0], mask[1])


def test_an_overlapping_window_keeps_one_mask_over_both_of_its_pieces(monkeypatch):
    model = tiny_model(dropout=0.5).train()
    model.regularisers = TrainConfig(dropout_kind="locked", weight_drop=0.5).regularisers()
    fused = FusedCalls(monkeypatch)
    inputs, _ = streams(steps=20)
    WindowStep(model)(inputs, model.init_state(4), Window(0, 10, 5, 20))  # carry at 10: run in two pieces
    assert len(fused.calls) == 4  # (head, tail) x two layers
    for layer in (0, 1):
        (head, head_weights), (tail, tail_weights) = fused.calls[layer], fused.calls[2 + layer]
        assert torch.equal(zero_pattern(head)[0], zero_pattern(tail)[0])
        assert torch.equal(head_weights[1], tail_weights[1])  # one weight-drop mask for the update


# -- everything off is today's trainer ---------------------------------------------------------------------------


def textbook_run(steps: int) -> list[float]:
    """What the trainer did before the regularisers, written out: forward, loss, backward, clip, fused AdamW."""
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0, fused=True)
    inputs, targets = streams()
    state, losses = model.init_state(4), []
    for k in range(steps):
        x, y = inputs[10 * k : 10 * k + 10], targets[10 * k : 10 * k + 10]
        logits, state = model(x, state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        groups = model.param_groups().values()  # the global norm as the trainer takes it: of the group norms
        norm = torch.linalg.vector_norm(torch.stack([get_total_norm([p.grad for p in ps]) for ps in groups]))
        torch.nn.utils.clip_grads_with_norm_(list(model.parameters()), 1.0, norm)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["standard", "locked"])
def test_with_every_regulariser_off_training_is_bit_identical_to_the_plain_loop(kind):
    steps = 12
    trainer = make_trainer(epochs=1, max_steps=steps, dropout_kind=kind)
    losses = []
    update = trainer.update
    trainer.update = lambda *a: (lambda out: losses.append(out[0].item()) or out)(update(*a))
    trainer.fit(*streams())
    assert trainer.average is None and trainer.penalty is None
    assert losses == textbook_run(steps)  # to the last bit


# -- weight drop ---------------------------------------------------------------------------------------------------


def test_weight_drop_masks_weight_hh_once_per_window_in_the_fused_call_and_keeps_the_parameter(monkeypatch):
    model = tiny_model().train()
    model.regularisers = TrainConfig(weight_drop=0.5).regularisers()
    fused = FusedCalls(monkeypatch)
    weight_hh = model.rnn.weight_hh_l0
    before = weight_hh.detach().clone()
    inputs, _ = streams(steps=20)
    run_window(model, inputs, model.init_state(4), 0, 20)
    assert len(fused.calls) == 2  # one fused call per layer for the 20 steps: no per-step loop
    passed = fused.calls[0][1]
    assert 0.4 < (passed[1] == 0).float().mean() < 0.6  # weight_hh masked
    kept = passed[1] != 0
    assert torch.allclose(passed[1][kept], 2 * before[kept])  # the rest scaled by 1 / (1 - p)
    assert torch.equal(passed[0], model.rnn.weight_ih_l0.detach())  # the input weights untouched
    assert model.rnn.weight_hh_l0 is weight_hh and torch.equal(weight_hh.detach(), before)  # the Parameter whole
    assert (model.rnn.weight_hh_l0 != 0).all()
    model.eval()  # evaluation: the unmasked weights, on the stacked module
    with torch.no_grad():
        out, _ = model(inputs[:5], model.init_state(4))
        expected, _ = model.rnn(model.embedding(inputs[:5]), model.spec.hx(model.init_state(4)))
    assert torch.equal(out, model.decoder(expected))


def test_weight_drop_masks_both_directions_of_a_bidirectional_layer(monkeypatch):
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell="lstm", input_size=3, output_size=2, tokens=False, hidden=8, layers=1,
                                       bidirectional=True)).train()
    model.regularisers = TrainConfig(weight_drop=0.5).regularisers()
    fused = FusedCalls(monkeypatch)
    with model.one_window():
        model.recur(torch.randn(12, 4, 3), model.init_state(4))
    assert len(fused.calls) == 2  # forwards and backwards, one fused call each
    for (_, passed), name in zip(fused.calls, ("weight_hh_l0", "weight_hh_l0_reverse")):
        assert 0.3 < (passed[1] == 0).float().mean() < 0.7, name  # each direction's weight_hh masked
        assert (getattr(model.rnn, name) != 0).all()  # the Parameter whole


def test_a_run_with_weight_drop_learns():
    pattern = torch.arange(401) % 4  # a sequence a small LSTM learns in a few dozen updates
    ids = pattern[:, None].repeat(1, 4)
    trainer = make_trainer(weight_drop=0.5, epochs=1, log_every=10, lr=1e-2)
    losses = []
    trainer.reporter.log = lambda record: losses.append(record["train_loss"])
    trainer.fit(ids[:-1], ids[1:])
    assert losses[-1] < 0.5 * losses[0], losses


# -- embedding dropout ---------------------------------------------------------------------------------------------


def test_embedding_dropout_zeroes_whole_words_the_same_at_every_position(monkeypatch):
    model = tiny_model(layers=1).train()
    model.regularisers = TrainConfig(embed_dropout=0.5).regularisers()
    seen = []
    model.rnn.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    inputs, _ = streams(steps=50)
    run_window(model, inputs, model.init_state(4), 0, 50)
    embedded, weight = seen[0], model.embedding.weight.detach()
    dropped_words = set()
    for token in range(VOCAB):
        rows = embedded[inputs == token]  # every position of this word: (n, embed)
        if (rows == 0).all():
            dropped_words.add(token)
        else:
            assert torch.allclose(rows, 2 * weight[token].expand_as(rows))  # kept whole, scaled by 1 / (1 - p)
    assert 2 <= len(dropped_words) <= VOCAB - 2  # some words dropped, some kept


# -- activation regularisation -----------------------------------------------------------------------------------


def test_ar_and_tar_add_their_penalty_to_the_gradient_not_to_the_reported_loss():
    inputs, targets = streams(steps=50)
    window = Window(0, 10, 0, 10)
    plain, penalised = make_trainer(model=tiny_model()), make_trainer(model=tiny_model(), ar=2.0, tar=1.0)
    state = plain.model.init_state(4)
    loss, _ = plain.backward(window, inputs, targets, state)
    loss_ar, _ = penalised.backward(window, inputs, targets, state)
    assert torch.equal(loss, loss_ar)  # the data loss is what is reported
    out, _ = penalised.model.recur(inputs[:10], state)
    expected = 2.0 * out.pow(2).mean() + 1.0 * (out[1:] - out[:-1]).pow(2).mean()
    assert torch.allclose(penalised.penalty, expected)
    grads = [(p.grad, q.grad) for p, q in zip(plain.model.parameters(), penalised.model.parameters())]
    assert any(not torch.allclose(a, b) for a, b in grads if a is not None)


def test_the_penalty_is_reported_beside_the_loss():
    records = []
    trainer = make_trainer(ar=1.0, tar=1.0, epochs=1, max_steps=10)
    trainer.reporter.log = records.append
    trainer.fit(*streams())
    assert records and all(record["penalty"] > 0 for record in records)
    plain = make_trainer(epochs=1, max_steps=10)
    plain.reporter.log = records.append
    plain.fit(*streams())
    assert "penalty" not in records[-1]


# -- averaged weights ----------------------------------------------------------------------------------------------


def test_validation_scores_the_exponential_average_and_training_goes_on_from_the_weights():
    scored = []
    trainer = make_trainer(validate=lambda m: scored.append(_weights(m)) or {"loss": 1.0 / (len(scored))},
                           average="ema:0.9", epochs=2)
    trainer.fit(*streams())
    values = trainer.average.values
    assert trainer.average.count == trainer.position.step + 1  # the initial weights and one per update
    params = dict(trainer.model.named_parameters())
    averaged = dict(zip([n for n, p in trainer.model.named_parameters()], values))
    assert all(torch.equal(scored[-1][name], averaged[name]) for name in params)  # validation saw the average
    assert not torch.equal(scored[-1]["rnn.weight_hh_l0"], params["rnn.weight_hh_l0"].detach())


def test_nt_asgd_starts_averaging_after_nonmono_validations_without_improvement():
    losses = iter([1.0, 0.9, 0.95, 0.97, 0.99, 0.5])
    trainer = make_trainer(validate=lambda m: {"loss": next(losses)}, optimizer="nt-asgd", lr=0.5, nonmono=2,
                           epochs=6)
    notes, starts = [], []
    trainer.reporter.note = notes.append
    trainer.reporter.validation = lambda record: starts.append(record["averaged"])
    trainer.fit(*streams())
    # two validations worse than 0.9 (the 3rd and 4th): averaging begins after the 4th
    assert starts == [False, False, False, False, True, True]
    assert "--nonmono 2" in notes[0]
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert trainer.average.count == 1 + 2 * 20  # a plain mean: the weights at the switch, then each update


@pytest.mark.parametrize("bad, message", [
    ({"average": "ema:1.5"}, "--average takes ema:DECAY"),
    ({"average": "swa"}, "--average takes ema:DECAY"),
    ({"optimizer": "nt-asgd", "average": "ema:0.99"}, "drop --average"),
    ({"weight_drop": 1.0}, "--weight-drop must be in"),
    ({"embed_dropout": -0.1}, "--embed-dropout must be in"),
    ({"dropout_kind": "zoned"}, "--dropout-kind is one of"),
    ({"ar": -1.0}, "--ar and --tar"),
    ({"nonmono": 0}, "--nonmono must be"),
])
def test_bad_regulariser_options_are_refused_in_one_line(bad, message):
    with pytest.raises(BpttError, match=message):
        TrainConfig(**bad).validate()


def test_a_run_with_averaging_resumed_mid_epoch_is_bit_identical():
    def validate(model):
        return {"loss": float(sum(p.detach().double().sum() for p in model.parameters()))}

    checkpoints, whole_saves = [], []
    options = dict(average="ema:0.95", checkpoint_every=4, weight_drop=0.3, embed_dropout=0.1, ar=1.0, tar=1.0,
                   dropout_kind="locked", epochs=3)
    whole = make_trainer(model=tiny_model(dropout=0.2), validate=validate, checkpoints=checkpoints,
                         saves=whole_saves, **options)
    whole.fit(*streams(steps=100))
    middle = [c for c in checkpoints if c["position"]["epoch"] == 2 and c["position"]["window_index"] > 0][0]
    assert middle["average"]["values"] is not None
    resumed_saves = []
    resumed = make_trainer(model=tiny_model(dropout=0.2, seed=9), validate=validate, saves=resumed_saves,
                           **options)
    resumed.fit(*streams(steps=100), resume=middle)
    for name, tensor in _weights(whole.model).items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert all(torch.equal(a, b) for a, b in zip(whole.average.values, resumed.average.values))
    for name, tensor in whole_saves[-1].items():  # the last model file written holds the same average
        assert torch.equal(resumed_saves[-1][name], tensor), name


def test_the_model_file_holds_the_average_and_evaluate_reproduces_the_validation_figure(tmp_path):
    text = "the quick brown fox jumps over the lazy dog. " * 200
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "val.txt").write_text("a lazy dog jumps over the quick brown fox. " * 8)  # < 512 tokens: exact
    model = tmp_path / "m.pt"
    runner = CliRunner()
    common = ["--hidden", "16", "--embed", "8", "--layers", "1", "--window", "20", "--batch-size", "4",
              "--threads", "1", "--no-cache"]
    trained = runner.invoke(app, ["train", str(tmp_path / "train.txt"), "--val", str(tmp_path / "val.txt"),
                                  "-o", str(model), "--epochs", "1", "--average", "ema:0.99", "--json",
                                  "--lr", "0.01", *common])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    checkpoint = torch.load(str(model) + ".ckpt" if not model.with_suffix(".ckpt").exists()
                            else model.with_suffix(".ckpt"), weights_only=True)["training"]
    file = load_model_file(model)
    names = [name for name, _ in file.model.named_parameters()]
    for name, value in zip(names, checkpoint["average"]["values"]):
        assert torch.equal(file.model.state_dict()[name], value), name  # the file holds the average
    assert not torch.equal(file.model.state_dict()["rnn.weight_hh_l0"], checkpoint["weights"]["rnn.weight_hh_l0"])
    evaluated = runner.invoke(app, ["evaluate", str(model), str(tmp_path / "val.txt"), "--json",
                                    "--precision", "fp32"])  # as validation ran (on a bf16 CPU auto takes bf16)
    assert evaluated.exit_code == 0, evaluated.output
    figures = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert figures["loss"] == pytest.approx(summary["best_val_loss"], rel=1e-9, abs=0)


def test_embedding_dropout_is_refused_for_feature_data(tmp_path):
    series = Path(__file__).parent.parent / "sample_data" / "elecdemand.csv"
    result = CliRunner().invoke(app, ["train", str(series), "--embed-dropout", "0.1",
                                      "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 2
    assert "--embed-dropout drops words of text and corpus models" in result.output
    assert not (tmp_path / "m.pt").exists()
