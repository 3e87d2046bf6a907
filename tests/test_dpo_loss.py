"""The DPO loss and its log-prob sums, against numbers worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from sicog.data.template import IGNORE_INDEX
from sicog.train.dpo import completion_logps, dpo_loss, preference_loss

# Three pairs at beta 0.5 (summed completion log-probs; chosen, rejected; policy, reference):
#   pair 1: chosen -10 vs -11 (+1), rejected -12 vs -11 (-1): rewards +0.5, -0.5, margin +1
#   pair 2: chosen  -4 vs  -4 ( 0), rejected  -3 vs  -3 ( 0): rewards  0,    0,   margin  0
#   pair 3: chosen  -9 vs  -7 (-2), rejected  -5 vs  -7 (+2): rewards -1,   +1,   margin -2
# loss = -log sigmoid(margin) = log(1 + e^-margin): log(1 + 1/e), log 2, log(1 + e^2)
BETA = 0.5
PI_C, PI_R = [-10.0, -4.0, -9.0], [-12.0, -3.0, -5.0]
REF_C, REF_R = [-11.0, -4.0, -7.0], [-11.0, -3.0, -7.0]
LOSSES = [0.31326168751822286, 0.6931471805599453, 2.1269280110429727]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_dpo_loss_worked_by_hand():
    losses, chosen, rejected = dpo_loss(t(PI_C), t(PI_R), t(REF_C), t(REF_R), BETA)
    assert losses.tolist() == pytest.approx(LOSSES, abs=1e-12)
    assert chosen.tolist() == [0.5, 0.0, -1.0] and rejected.tolist() == [-0.5, 0.0, 1.0]
    # a policy equal to its reference scores log 2 on every pair, whatever the log-probs
    same, _, _ = dpo_loss(t(PI_C), t(PI_R), t(PI_C), t(PI_R), BETA)
    assert same.tolist() == pytest.approx([math.log(2)] * 3, abs=1e-12)


def test_dpo_loss_gradient_pushes_chosen_up_and_rejected_down():
    pi_c, pi_r = t(PI_C).requires_grad_(), t(PI_R).requires_grad_()
    dpo_loss(pi_c, pi_r, t(REF_C), t(REF_R), BETA)[0].sum().backward()
    # d/d(pi_c) of log(1 + e^-m) = -beta * sigmoid(-m): -0.5 * (0.2689, 0.5, 0.8808)
    assert pi_c.grad.tolist() == pytest.approx([-0.13447071068499755, -0.25, -0.44039853898894116], abs=1e-12)
    assert pi_r.grad.tolist() == pytest.approx([0.13447071068499755, 0.25, 0.44039853898894116], abs=1e-12)


@pytest.mark.parametrize("sft_weight, loss", [(0.0, 1.0444456263737136), (0.25, 1.6194456263737136),
                                               (1.0, 3.3444456263737136)])
def test_preference_loss_worked_by_hand(sft_weight, loss):
    # chosen answers of 4, 2 and 4 tokens: the SFT term is -(-10 - 4 - 9) / 10 = 2.3 per chosen token;
    # the rejected answers' token counts do not enter it
    counts = torch.tensor([4, 2, 4, 9, 1, 3])
    out = preference_loss(t(PI_C + PI_R), counts, t(REF_C), t(REF_R), beta=BETA, sft_weight=sft_weight)
    assert out["dpo"].item() == pytest.approx(sum(LOSSES) / 3, abs=1e-12)
    assert out["sft"].item() == pytest.approx(2.3, abs=1e-12)
    assert out["loss"].item() == pytest.approx(loss, abs=1e-12)
    assert out["chosen_rewards"].tolist() == [0.5, 0.0, -1.0]
    assert out["rejected_rewards"].tolist() == [-0.5, 0.0, 1.0]


def test_completion_logps_worked_by_hand():
    # vocabulary of 3; position t predicts token t+1. Row 0 labels tokens 1 and 3: p(1) = 2/4 at
    # position 0 (logits log 1, log 2, log 1) and p(0) = 1/3 at position 2 (equal logits); the
    # logits at positions 1 and 3 are never read. Row 1 labels nothing.
    logits = torch.zeros(2, 4, 3, dtype=torch.float64)
    logits[0, 0] = torch.log(t([1.0, 2.0, 1.0]))
    logits[0, 1] = t([5.0, -3.0, 1.0])
    logits[0, 3] = t([9.0, 9.0, -9.0])
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, 0], [IGNORE_INDEX] * 4])
    sums, counts = completion_logps(logits, labels)
    assert sums.tolist() == pytest.approx([math.log(0.5) + math.log(1 / 3), 0.0], abs=1e-12)  # -log 6, 0
    assert counts.tolist() == [2, 0]
