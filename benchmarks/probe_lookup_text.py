"""Can the tiny LM look a word of the question up in its context? A text-only probe.

Fine-tunes an LM folder (e.g. `RUN/pretrain/llm` from `sicog world pretrain`) on one balanced
question, "Is there a <colour> object in the image?", answered from a text context placed before
it, with the loss on the answer token only. It prints held-out accuracy (300 scenes of the world's
`pool` split: labelled by the world, unlabeled to the cycle) every 100 steps. The context is the
object names ("red circle, blue square", `--short`), the full description (`texts.describe`), or
a mix of both (`--mixshort 0.5`). `--trivial` is the control whose answer depends only on the
question's colour. `--save DIR` writes the fine-tuned LM. The README's issue-12 table comes from it:

    python benchmarks/probe_lookup_text.py --llm RUN/pretrain/llm --world RUN/world \
        --steps 2500 --lr 3e-4 --mixshort 0.5 --save /tmp/llm_lookup
"""
import json, random, sys, time, argparse
import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM
from sicog.world import texts as T
from sicog.data.template import chatml
from sicog.world.vocab import COLOURS
ap = argparse.ArgumentParser(); ap.add_argument('--llm'); ap.add_argument('--world'); ap.add_argument('--steps', type=int, default=1000)
ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--bs', type=int, default=32); ap.add_argument('--random', action='store_true')
ap.add_argument('--short', action='store_true', help='context = colour list only'); ap.add_argument('--cfg', default=''); ap.add_argument('--trivial', action='store_true'); ap.add_argument('--mixshort', type=float, default=None); ap.add_argument('--save', default=None)
a = ap.parse_args(); torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(a.llm); m = Qwen2ForCausalLM.from_pretrained(a.llm)
if a.random:
    cfg = m.config
    for kv in filter(None, a.cfg.split(',')):
        k, v = kv.split('='); setattr(cfg, k, int(v))
    m = Qwen2ForCausalLM(cfg)
scenes = [json.loads(l) for l in open(a.world + '/world.jsonl')]
def items(splits, rng, short=None):
    out = []
    for s in [s for s in scenes if s['split'] in splits]:
        present = {o['colour'] for o in s['objects']}; y = rng.random() < 0.5
        c = rng.choice(sorted(present)) if y else rng.choice(sorted(set(COLOURS) - present))
        if a.trivial: y = c in ('red', 'blue')
        sh = (rng.random() < a.mixshort) if (short is None and a.mixshort is not None) else (a.short if short is None else short)
        ctx = ', '.join(T.name(o) for o in s['objects']) if sh else T.describe(s)
        text = chatml(f"{ctx}\nIs there a {c} object in the image? Answer the question using a single word or phrase.", 'yes' if y else 'no')
        out.append((text, 'yes' if y else 'no'))
    return out
rng = random.Random(0); train = items(('clip', 'align', 'sft'), rng); test = items(('pool',), random.Random(1), short=False)[:300]; test_short = items(('pool',), random.Random(1), short=True)[:300]
yes = tok.encode('yes', add_special_tokens=False)[0]; no = tok.encode('no', add_special_tokens=False)[0]
def prompt(t): return t[:t.rindex('<|im_start|>assistant\n') + len('<|im_start|>assistant\n')]
def batch(texts):
    ids = [tok(prompt(t)).input_ids for t in texts]; L = max(map(len, ids))
    x = torch.full((len(ids), L), tok.pad_token_id or 0); att = torch.zeros_like(x)
    for i, r in enumerate(ids): x[i, L - len(r):] = torch.tensor(r); att[i, L - len(r):] = 1
    return x, att
def evaluate(test=test):
    m.eval(); hit = 0
    with torch.no_grad():
        for i in range(0, len(test), 50):
            ch = test[i:i + 50]; x, att = batch([t for t, _ in ch])
            pos = (att.cumsum(-1) - 1).clamp(min=0)
            lg = m(input_ids=x, attention_mask=att, position_ids=pos).logits[:, -1]
            hit += sum(('yes' if l[yes] > l[no] else 'no') == ans for l, (_, ans) in zip(lg, ch))
    m.train(); return hit / len(test)
opt = torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=0); t0 = time.time(); print(0, evaluate(), flush=True)
for step in range(a.steps):
    ch = [train[(step * a.bs + j) % len(train)] for j in range(a.bs)]
    x, att = batch([t for t, _ in ch]); pos = (att.cumsum(-1) - 1).clamp(min=0)
    lg = m(input_ids=x, attention_mask=att, position_ids=pos).logits[:, -1]
    tgt = torch.tensor([yes if ans == 'yes' else no for _, ans in ch])
    loss = torch.nn.functional.cross_entropy(lg, tgt); opt.zero_grad(); loss.backward(); opt.step()
    if (step + 1) % 100 == 0: print(step + 1, round(loss.item(), 3), 'desc', evaluate(), 'short', evaluate(test_short), '%.0fs' % (time.time() - t0), flush=True)

if a.save: m.save_pretrained(a.save); tok.save_pretrained(a.save)
