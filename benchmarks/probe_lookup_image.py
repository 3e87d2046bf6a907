"""Does the VLM read the image for a word of the question? The image counterpart of
`probe_lookup_text.py`.

From a base model and a stage-1 projector (`--model BASE:STAGE1`, e.g.
`RUN/base/model:RUN/stage1/s0/model`), trains on "Is there a <colour> object in the image?" for the
world's `clip`, `align` and `sft` images (`--task bg`: "Is the background <colour>?") and prints
the accuracy on 200 `pool` images with their own pixels and with another image's pixels every 50
steps. `--first N` trains the first N steps on "What colors are the objects?" (the sorted colours of
the objects: the direct reading of the image that `sft.jsonl`'s listing questions ask for, in other
words) and only then on the
existence question; `--mix P` mixes that listing question in at rate P instead. `--llm DIR`
swaps in another LM first (e.g. the one `probe_lookup_text.py --save` wrote);
`--lr` is the LLM's rate, `--proj-lr` the projector's, `--tower-lr` the tower's. The README's
issue-12 figures come from:

    python benchmarks/probe_lookup_image.py --model RUN/base/model:RUN/stage1/s0/model \
        --world RUN/world --steps 1000 --lr 3e-4 --proj-lr 1e-3 [--llm /tmp/llm_lookup]

and its reading-first figures from `--steps 700 --lr 5e-4` with `--first 350` and without.
"""
import json, random, sys, time, argparse
from pathlib import Path
import torch
from sicog.model import SicogForConditionalGeneration, SicogProcessor
from sicog.world.vocab import COLOURS
ap = argparse.ArgumentParser()
ap.add_argument('--model'); ap.add_argument('--world'); ap.add_argument('--steps', type=int, default=200)
ap.add_argument('--lr', type=float, default=5e-4); ap.add_argument('--tower-lr', type=float, default=2e-5)
ap.add_argument('--proj-lr', type=float, default=None); ap.add_argument('--freeze-llm', action='store_true')
ap.add_argument('--task', default='colour'); ap.add_argument('--random-llm', action='store_true'); ap.add_argument('--mix', type=float, default=0); ap.add_argument('--scale', type=float, default=None); ap.add_argument('--bs', type=int, default=16); ap.add_argument('--llm', default=None)
ap.add_argument('--first', type=int, default=0)
a = ap.parse_args()
torch.manual_seed(0); random.seed(0)
W = Path(a.world)
base = a.model.split(':')[0]
m = SicogForConditionalGeneration.from_pretrained(base); p = SicogProcessor.from_pretrained(base)
if ':' in a.model:
    from sicog.train.artefacts import load_projector_artefact
    load_projector_artefact(m, a.model.split(':')[1])
p.mask_mode = 'assistant'
if a.random_llm:
    from transformers import Qwen2ForCausalLM
    torch.manual_seed(1)
    fresh = Qwen2ForCausalLM(m.config.text_config)
    m.model.language_model, m.lm_head = fresh.model, fresh.lm_head
if a.llm:
    from transformers import Qwen2ForCausalLM
    new = Qwen2ForCausalLM.from_pretrained(a.llm)
    from sicog.model.modeling import causal_lm_view
    missing = causal_lm_view(m).load_state_dict(new.state_dict(), strict=True)
    print('swapped LLM from', a.llm, flush=True)
if a.scale:
    m.projector.register_forward_hook(lambda mod, i, o: o * a.scale)
scenes = [json.loads(l) for l in open(W / 'world.jsonl')]
def items(split, n, rng):
    out = []
    for s in [s for s in scenes if s['split'] in split][:n]:
        if a.task == 'bg':
            present = {s['background']}; allc = ['white', 'gray', 'black', 'beige']
        else:
            present = {o['colour'] for o in s['objects']}; allc = COLOURS
        yes = rng.random() < 0.5 and present
        c = rng.choice(sorted(present)) if yes else rng.choice(sorted(set(allc) - present))
        out.append((s, c, 'yes' if yes else 'no'))
    return out
rng = random.Random(0)
train = items(('clip', 'align', 'sft'), 5000, rng); test = items(('pool',), 200, rng)
Q = ('Is the background {}? Answer the question using a single word or phrase.' if a.task == 'bg' else
     'Is there a {} object in the image? Answer the question using a single word or phrase.')
mixrng = random.Random(5)
def enc(s, c, ans, img=None, listing=False):
    conv = [{"from": "human", "value": "<image>\n" + Q.format(c)}, {"from": "gpt", "value": ans}]
    if listing or mixrng.random() < a.mix:
        if a.task == 'bg':
            conv = [{"from": "human", "value": "<image>\nWhat is the background color? Answer the question using a single word or phrase."}, {"from": "gpt", "value": s['background']}]
        else:
            conv = [{"from": "human", "value": "<image>\nWhat colors are the objects? Answer the question using a single word or phrase."}, {"from": "gpt", "value": ', '.join(sorted({o['colour'] for o in s['objects']}))}]
    return p.encode(conv, image=p.load_image(W / (img or s['image'])))
groups = [{'params': [x for n, x in m.named_parameters() if n.startswith('model.vision_tower')], 'lr': a.tower_lr},
          {'params': [x for n, x in m.named_parameters() if n.startswith('model.projector')], 'lr': a.proj_lr or a.lr},
          {'params': [x for n, x in m.named_parameters() if n.startswith(('model.language_model', 'lm_head'))], 'lr': 0 if a.freeze_llm else a.lr}]
opt = torch.optim.AdamW(groups, weight_decay=0)
yes_id = p.tokenizer.encode('yes', add_special_tokens=False)[0]; no_id = p.tokenizer.encode('no', add_special_tokens=False)[0]
def evaluate():
    m.eval(); res = {}
    for mode in ('own', 'shuffled'):
        hit = 0
        for i in range(0, len(test), 20):
            chunk = test[i:i+20]
            its = []
            for k, (s, c, ans) in enumerate(chunk):
                img = test[(i + k + 100) % len(test)][0]['image'] if mode == 'shuffled' else None
                conv = [{"from": "human", "value": "<image>\n" + Q.format(c)}]
                its.append(p.encode(conv, image=p.load_image(W / (img or s['image'])), add_generation_prompt=True))
            b = p.collate(its, padding_side='left')
            with torch.no_grad():
                lg = m(input_ids=b['input_ids'], attention_mask=b['attention_mask'], images=b['images']).logits[:, -1]
            pred = ['yes' if x[yes_id] > x[no_id] else 'no' for x in lg]
            hit += sum(pr == ans for pr, (_, _, ans) in zip(pred, chunk))
        res[mode] = hit / len(test)
    m.train(); return res
t0 = time.time(); m.train(); losses = []
for step in range(a.steps):
    batch = p.collate([enc(*train[(step * a.bs + j) % len(train)], listing=step < a.first) for j in range(a.bs)])
    loss = m(**batch).loss; opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
    losses.append(loss.item())
    if (step + 1) % 50 == 0:
        print(step + 1, 'loss %.3f' % (sum(losses[-50:]) / 50), evaluate(), '%.0fs' % (time.time() - t0), flush=True)
