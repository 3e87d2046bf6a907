"""The DPO loss: against the published formula, against TRL's own loss code, and its log-prob sums."""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sicog.data.template import IGNORE_INDEX
from sicog.train.dpo import completion_logps, dpo_loss, preference_loss


def random_logps(seed: int, pairs: int = 6):
    g = torch.Generator().manual_seed(seed)
    return [-50 * torch.rand(pairs, generator=g, dtype=torch.float64) for _ in range(4)]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_loss_matches_the_published_formula(beta):
    pi_c, pi_r, ref_c, ref_r = random_logps(int(beta * 10))
    losses, chosen_rewards, rejected_rewards = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
    expected = -torch.log(torch.sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))))
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(chosen_rewards, beta * (pi_c - ref_c))
    torch.testing.assert_close(rejected_rewards, beta * (pi_r - ref_r))
    # Equal policy and reference give log 2 whatever the log-probs are.
    same, _, _ = dpo_loss(pi_c, pi_r, pi_c, pi_r, beta)
    torch.testing.assert_close(same, torch.full_like(same, torch.log(torch.tensor(2.0, dtype=same.dtype)).item()))


def test_dpo_loss_gradient_pushes_chosen_up_and_rejected_down():
    pi_c, pi_r, ref_c, ref_r = (t.clone().requires_grad_(i < 2) for i, t in enumerate(random_logps(3)))
    dpo_loss(pi_c, pi_r, ref_c, ref_r, 0.1)[0].sum().backward()
    assert (pi_c.grad < 0).all() and (pi_r.grad > 0).all()


def test_preference_loss_adds_the_sft_term_per_chosen_token():
    pi_c, pi_r, ref_c, ref_r = random_logps(7, pairs=4)
    counts = torch.tensor([3, 5, 2, 7, 4, 4, 4, 4])
    logps = torch.cat([pi_c, pi_r])
    for weight in (0.0, 1.0, 0.25):
        out = preference_loss(logps, counts, ref_c, ref_r, beta=0.1, sft_weight=weight)
        dpo = (-F.logsigmoid(0.1 * ((pi_c - ref_c) - (pi_r - ref_r)))).mean()
        nll = -pi_c.sum() / counts[:4].sum()
        torch.testing.assert_close(out["dpo"], dpo)
        torch.testing.assert_close(out["sft"], nll)
        torch.testing.assert_close(out["loss"], dpo + weight * nll)


def test_completion_logps_sums_only_labelled_next_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, :4] = IGNORE_INDEX
    labels[1, :] = IGNORE_INDEX
    labels[1, 5] = 2
    labels[2, ::2] = IGNORE_INDEX
    sums, counts = completion_logps(logits, labels)
    # Reference: cross entropy with the usual shift (position t predicts t+1), summed per row.
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), reduction="none",
                                ignore_index=IGNORE_INDEX).view(3, 6)
    torch.testing.assert_close(sums, -per_token.sum(-1))
    assert counts.tolist() == [(labels[i, 1:] != IGNORE_INDEX).sum().item() for i in range(3)]
    assert counts[1].item() == 1


class _Outputs(SimpleNamespace):
    pass


def _trl_loss(per_token_logps, completion_mask, ref_chosen, ref_rejected, beta, sft_weight):
    """TRL 1.16's DPOTrainer._compute_loss run on given per-token log-probs (its model calls faked)."""
    from trl.trainer.dpo_trainer import DPOTrainer

    batch, seq = completion_mask.shape
    outputs = _Outputs(log_probs=per_token_logps, entropy=torch.zeros(batch, seq - 1),
                       mean_logits=torch.zeros(batch, seq - 1), is_top1=torch.zeros(batch, seq - 1, dtype=torch.bool))
    identity = lambda t: t  # noqa: E731
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(device="cpu", gather=identity,
                                                                          gather_for_metrics=identity),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["sigmoid", "sft"], loss_weights=[1.0, sft_weight], beta=beta, use_weighting=False,
        label_smoothing=0.0, _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(batch, seq, dtype=torch.long), "attention_mask": torch.ones(batch, seq),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
    loss = DPOTrainer._compute_loss(fake, lambda **kw: outputs, inputs, return_outputs=False)
    return loss, fake._metrics["train"]


def test_loss_matches_trl_dpo_trainer_sigmoid_plus_sft():
    pytest.importorskip("trl")
    g = torch.Generator().manual_seed(1)
    pairs, seq = 3, 9
    completion_mask = torch.zeros(2 * pairs, seq, dtype=torch.long)
    for row, start in enumerate([3, 4, 5, 2, 6, 3]):
        completion_mask[row, start:seq - row % 2] = 1
    per_token = -3 * torch.rand(2 * pairs, seq - 1, generator=g)
    # TRL's fused head gives log-probs already zeroed outside the completion (shifted mask).
    per_token = per_token * completion_mask[:, 1:]
    ref_chosen, ref_rejected = -20 * torch.rand(pairs, generator=g), -20 * torch.rand(pairs, generator=g)
    trl_loss, metrics = _trl_loss(per_token, completion_mask, ref_chosen, ref_rejected, beta=0.1, sft_weight=1.0)

    ours = preference_loss(per_token.sum(1), completion_mask[:, 1:].sum(1), ref_chosen, ref_rejected,
                           beta=0.1, sft_weight=1.0)
    torch.testing.assert_close(ours["loss"], trl_loss)
    assert ours["chosen_rewards"].mean().item() == pytest.approx(metrics["rewards/chosen"][0], rel=1e-5)
    assert ours["rejected_rewards"].mean().item() == pytest.approx(metrics["rewards/rejected"][0], rel=1e-5)
    accuracy = (ours["chosen_rewards"] > ours["rejected_rewards"]).float().mean().item()
    assert accuracy == pytest.approx(metrics["rewards/accuracies"][0])
