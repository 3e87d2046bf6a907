"""`sicog reproduce`: the whole SICOG cycle on the mini world, ending in the results table.

    sicog reproduce --out runs/reproduce --size mini          # `make reproduce`
    sicog reproduce --out /tmp/r --size micro                  # a few minutes; run by the tests

Every step writes into `OUT/<step>/` and is skipped when rerun after it finished, so a killed run
resumes. The steps, per training seed (SPEC section 1):

 1. world, unimodal pre-training of the tiny CLIP and Qwen2, the fresh model (`sicog build-model`);
    stage 1 alignment on `align`, stage 2 on `sft`: the baseline;
 2. CoD seed annotated through the world's teacher with the real client (`sicog annotate-cod`),
    CoT seed converted (`sicog convert-cot`);
 3. stage 0 from the baseline: a perception model and a reasoning model;
 4. N candidates for the image pool and the question pool (`sicog generate`, `merge-candidates`),
    curated by self-consistency (`sicog curate`);
 5. stage 1.5 from the stage-1 model on the curated data, then stage 2: the SICOG model;
 6. every model evaluated (`sicog evaluate`), the headline pair also with shuffled images (the blind
    control: does the model read the image?) and through `sicog probe` (what tower and connector
    carry, and the teacher-forced answers with own and shuffled images); table, perception gates,
    curation diagnostics, costs and plots.

Sizes live in configs/experiments/reproduce.yaml; the variants (table rows) in
sicog/evaluate/variants.py.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import yaml

from sicog.config_files import packaged
from sicog.data.checks import InputError, check_output_dir
from sicog.data.output_lock import OutputLock
from sicog.data.records import read_records, write_jsonl
from sicog.evaluate.steps import StepRunner
from sicog.generate.settings import SamplingSettings
from sicog.evaluate.variants import CAPTION_MODES, REASONING_MODES, VARIANTS, Variant, get_variants

log = logging.getLogger(__name__)
SAMPLING = SamplingSettings()   # the generation defaults, written out in every step's command

EXPERIMENTS = packaged("experiments", "reproduce.yaml")


def load_plan(size: str, path: str | Path = EXPERIMENTS) -> dict:
    with open(path) as f:
        plans = yaml.safe_load(f)
    if size not in plans:
        raise ValueError(f"unknown size {size!r}; {path} defines {sorted(plans)}")
    return plans[size]


class Cycle:
    """The steps of the cycle for one plan, as methods that return the folder they produced."""

    def __init__(self, out: Path, size: str, plan: dict):
        self.out, self.size, self.plan = out, size, plan
        self.run = StepRunner(out)
        self.world = out / "world"
        self.tau = plan["threshold"]

    # ------------------------------------------------------------------ shared foundations
    def build_world(self) -> Path:
        self.run.sicog("world", ["world", "build", "--out", self.world, "--size", self.plan["world"],
                                 "--seed", self.plan["world_seed"]])
        return self.world

    def base_model(self) -> Path:
        args = ["world", "pretrain", "--world", self.world, "--out", self.run.folder("pretrain")]
        if self.plan.get("pretrain_steps"):
            args += ["--steps", self.plan["pretrain_steps"]]
        pre = self.run.sicog("pretrain", args)
        base = self.run.folder("base")
        self.run.sicog("base", ["build-model", "--vision", pre / "clip", "--llm", pre / "llm", "--tier", "tiny",
                                "--out", base / "model"])
        return base / "model"

    def train(self, name: str, stage: str, data: Path, seed: int, start: list) -> Path:
        folder = self.run.folder(name)
        args = ["train", "--stage", stage, "--profile", "tiny", "--data_path", data, "--image_folder", self.world,
                "--output_dir", folder / "model", "--seed", seed, *start]
        overrides = {**(self.plan.get("train_overrides") or {}),
                     **((self.plan.get("stage_overrides") or {}).get(stage) or {})}
        for key, value in overrides.items():
            args += [f"--{key}", value]
        self.run.sicog(name, args)
        return folder / "model"

    def annotations(self) -> dict[str, Path]:
        """The stage-0 seed data: CoD/DD through the teacher, CoT/short through the converter."""
        data = self.world / "data"
        cod = self.run.sicog("annotate", ["annotate-cod", "--input", data / "cod_seed_raw.jsonl",
                                          "--image-dir", self.world, "--output-cod-dir", self.run.folder("annotate") / "cod",
                                          "--output-dd-dir", self.run.folder("annotate") / "dd",
                                          "--world-teacher", self.world, "--concurrency", 4])
        cot = self.run.sicog("convert_cot", ["convert-cot", "--input", data / "llava_cot_seed.json",
                                             "--output-cot-dir", self.run.folder("convert_cot") / "cot",
                                             "--output-short-dir", self.run.folder("convert_cot") / "short"])
        return {"cod": cod / "cod" / "cod.jsonl", "dd": cod / "dd" / "dd.jsonl",
                "cot": cot / "cot" / "cot.jsonl", "short": cot / "short" / "short.jsonl"}

    # ------------------------------------------------------------------ per seed
    def stage1(self, seed: int, base: Path) -> Path:
        return self.train(f"stage1/s{seed}", "stage1", self.world / "data" / "align.jsonl", seed,
                          ["--model_name_or_path", base])

    def baseline(self, seed: int, stage1: Path) -> Path:
        return self.train(f"stage2/baseline-s{seed}", "stage2", self.world / "data" / "sft.jsonl", seed,
                          ["--mm_projector_checkpoint", stage1])

    def mixture(self, name: str, files: list[Path]) -> Path:
        """A mixture YAML over `files` (each with the world as image folder)."""
        path = self.run.folder("mixtures") / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [{"json_path": str(f.resolve()), "image_folder": str(self.world.resolve()), "sampling_strategy": "all"}
                   for f in files]
        path.write_text(yaml.safe_dump(entries, sort_keys=False))
        return path

    def warmup(self, kind: str, mode: str, seed: int, start: Path, seed_data: dict[str, Path], tag: str) -> Path:
        """Stage 0 from `start` on the seed data of a caption or reasoning mode."""
        names = CAPTION_MODES[mode]["seed_data"] if kind == "perception" else REASONING_MODES[mode]["seed_data"]
        names = (names,) if isinstance(names, str) else names
        data = self.mixture(f"stage0-{kind}-{mode}", [seed_data[n] for n in names])
        return self.train(f"stage0/{kind}-{mode}-{tag}s{seed}", "stage0", data, seed, ["--model_name_or_path", start])

    def pools(self) -> dict[str, Path]:
        """The unlabeled pools used for generation: the first `pool_images` / `pool_questions` records."""
        def cut(folder: Path) -> None:
            for name in ("pool_images", "pool_questions"):
                records = read_records(self.world / "data" / f"{name}.jsonl")
                limit = self.plan.get(name)
                write_jsonl(folder / f"{name}.jsonl", records[:limit] if limit else records)
        folder = self.run.python("pools", cut, "first records of the world's pools (plan: pool_images, pool_questions)")
        return {"caption": folder / "pool_images.jsonl", "reasoning": folder / "pool_questions.jsonl"}

    def generate(self, name: str, model: Path, task: str, prompt: str, seed: int, augment: str = "") -> Path:
        data = self.pools()[task]
        folder = self.run.folder(name)
        tokens = self.plan["caption_max_new_tokens" if task == "caption" else "reasoning_max_new_tokens"]
        args = ["generate", "--model", model, "--data", data, "--image-folder", self.world,
                "--out", folder / "candidates.jsonl", "--task", task, "--prompt", prompt,
                "--num-candidates", self.plan["num_candidates"], "--max-new-tokens", tokens, "--seed", seed,
                "--batch-size", self.plan["generate_batch_size"], "--temperature", SAMPLING.temperature,
                "--top-p", SAMPLING.top_p]
        if augment:
            args += ["--augment", augment]
        self.run.sicog(f"{name}/run", args)
        self.run.sicog(f"{name}/merge", ["merge-candidates", "--inputs", data,
                                         "--shards", str(folder / "candidates.jsonl.rank*-of-*.jsonl"),
                                         "--out", folder / "merged.jsonl"])
        return folder / "merged.jsonl"

    def curate(self, name: str, candidates: Path, model: Path, method: str = "embedding", seed: int = 0) -> Path:
        taus = ",".join(str(t) for t in self.plan["thresholds"])
        return self.run.sicog(name, ["curate", "--candidates", candidates, "--out", self.run.folder(name),
                                     "--thresholds", taus, "--method", method, "--model", model, "--seed", seed])

    def curated_file(self, folder: Path, tau: float | None = None) -> Path:
        return folder / f"curated_tau{self.tau if tau is None else tau:g}.jsonl"

    def gold_for_pool(self, kind: str) -> Path:
        """The world's gold texts (`cod` captions or `cot` answers) for the ids of the pool in use."""
        pool = self.pools()["caption" if kind == "cod" else "reasoning"]
        def select(folder: Path) -> None:
            ids = {str(r["id"]) for r in read_records(pool)}
            gold = read_records(self.world / "data" / "pool_gold" / f"{kind}.jsonl")
            write_jsonl(folder / f"{kind}.jsonl", [r for r in gold if str(r["id"]) in ids])
        return self.run.python(f"oracle/{kind}", select, f"gold {kind} texts of the pool in use") / f"{kind}.jsonl"

    # ------------------------------------------------------------------ a whole variant
    def pretraining_data(self, v: Variant, seed: int, start: Path, seed_data: dict[str, Path]) -> list[Path]:
        """The stage-1.5 files of variant `v` (self-generated from `start`, or gold for the oracle)."""
        if v.source == "gold":
            return [self.gold_for_pool(kind) for kind, mode in (("cod", v.captions), ("cot", v.reasoning)) if mode]
        tag = f"r{v.round}-" if v.round > 1 else ""
        files = []
        for kind, mode in (("perception", v.captions), ("reasoning", v.reasoning)):
            if mode is None:
                continue
            task = "caption" if kind == "perception" else "reasoning"
            prompt = (CAPTION_MODES if task == "caption" else REASONING_MODES)[mode]["prompt"]
            model = self.warmup(kind, mode, seed, start, seed_data, tag)
            gen_tag = f"{kind}-{mode}-{tag}s{seed}"
            if kind == "reasoning" and v.reasoning_warmup == "dpo":
                model = self.dpo_warmup(model, seed, gen_tag)
                gen_tag = f"{kind}-{mode}-dpo-{tag}s{seed}"
            candidates = self.generate(f"generate/{gen_tag}", model, task, prompt, seed)
            if v.curation == "random":   # the same curate run and record writer, only the choice differs
                files.append(self.curated_file(self.curate(f"pick/{gen_tag}", candidates, model, "random", seed)))
            else:
                files.append(self.curated_file(self.curate(f"curate/{gen_tag}", candidates, model), v.tau))
        return files

    def dpo_warmup(self, sft_model: Path, seed: int, gen_tag: str) -> Path:
        """DPO on pairs from curation and from candidates generated on corrupted images."""
        clean = self.generate(f"generate/{gen_tag}", sft_model, "reasoning", "cot-default", seed)
        curated = self.curate(f"curate/{gen_tag}", clean, sft_model)
        noisy = self.generate(f"generate/{gen_tag}-noisy", sft_model, "reasoning", "cot-default", seed,
                              augment="gaussian_blur,color_jitter,mirror_rotation,mask")
        prefs = self.run.folder(f"preferences/{gen_tag}")
        self.run.sicog(f"preferences/{gen_tag}", ["build-preferences", "--source", "both",
                                                  "--pairs", curated / "preferences.jsonl", "--noisy", noisy,
                                                  "--curated", self.curated_file(curated), "--seed", seed,
                                                  "--out", prefs / "pairs.jsonl"])
        return self.train(f"stage0/dpo-{gen_tag}", "dpo", prefs / "pairs.jsonl", seed, ["--model_name_or_path", sft_model])

    def variant_model(self, v: Variant, seed: int, base: Path, seed_data: dict[str, Path], done: dict) -> Path:
        stage1 = self.stage1(seed, base)
        baseline = self.baseline(seed, stage1)
        if v.is_baseline:
            return baseline
        start = baseline
        if v.round > 1:
            start = done.get((v.previous, seed)) or self.variant_model(VARIANTS[v.previous], seed, base, seed_data, done)
        files = self.pretraining_data(v, seed, start, seed_data)
        s15 = self.train(f"stage1_5/{v.name}-s{seed}", "stage1_5", self.mixture(f"stage1_5-{v.name}-s{seed}", files),
                         seed, ["--mm_projector_checkpoint", stage1])
        model = self.train(f"stage2/{v.name}-s{seed}", "stage2", self.world / "data" / "sft.jsonl", seed,
                           ["--model_name_or_path", s15])
        done[(v.name, seed)] = model
        return model

    def evaluate(self, name: str, model: Path, blind: bool = False) -> Path:
        """`sicog evaluate`; `blind`: the shuffled-image control on QA and POPE (captions cost the most)."""
        args = ["evaluate", "--model", model, "--world", self.world, "--out", self.run.folder(name)]
        if blind:
            args += ["--images", "shuffled", "--benchmarks", "qa,pope"]
        if self.plan.get("eval_limit"):
            args += ["--limit", self.plan["eval_limit"]]
        return self.run.sicog(name, args)

    def probe(self, name: str, model: Path) -> Path:
        """`sicog probe` on the eval split: linear probes of tower and connector, own-vs-shuffled answers."""
        folder = self.run.folder(name)
        args = ["probe", "--model", model, "--world", self.world, "--split", "eval", "--out", folder / "probe.json"]
        if self.plan.get("eval_limit"):
            args += ["--limit", self.plan["eval_limit"]]
        self.run.sicog(name, args)
        return folder / "probe.json"


def run_cycle(out: Path, size: str, rows: list[str] | None = None, seeds: list[int] | None = None) -> dict:
    """Run (or resume) the cycle; returns {(variant, seed): evaluation folder} and the cycle."""
    plan = load_plan(size)
    variants = get_variants(rows or plan["rows"])
    seeds = seeds if seeds is not None else plan["seeds"]
    cycle = Cycle(out, size, plan)
    started = time.time()
    cycle.build_world()
    base = cycle.base_model()
    seed_data = cycle.annotations()
    done: dict = {}
    evals: dict = {}
    blind: dict = {}
    probes: dict = {}
    steps: dict = {}
    for v in variants:
        # The headline pair runs over every seed; the other rows over the first.
        for seed in (seeds if v.name in ("baseline", "sicog") else seeds[:1]):
            first = len(cycle.run.requested)
            model = cycle.variant_model(v, seed, base, seed_data, done)
            steps[(v.name, seed)] = cycle.run.requested[first:]   # what this row used, run now or before
            evals[(v.name, seed)] = cycle.evaluate(f"eval/{v.name}-s{seed}", model)
            if v.name in ("baseline", "sicog") and seed == seeds[0]:
                blind[v.name] = cycle.evaluate(f"eval/{v.name}-s{seed}-shuffled", model, blind=True)
                probes[v.name] = cycle.probe(f"probe/{v.name}-s{seed}", model)
    log.info("cycle finished in %.1fs", time.time() - started)
    return {"cycle": cycle, "variants": variants, "seeds": seeds, "evals": evals, "blind": blind, "probes": probes,
            "steps": steps}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run folder; every step writes OUT/<step>/ and is resumable")
    parser.add_argument("--size", default="mini",
                        help="a plan of configs/experiments/reproduce.yaml: micro, mini (30-minute budget), mini-full")
    parser.add_argument("--rows", default=None, help="comma list of table rows (default: the plan's rows)")
    parser.add_argument("--seeds", default=None, help="comma list of training seeds (default: the plan's)")


def run(args: argparse.Namespace) -> int:
    from sicog.evaluate.report import write_report
    from sicog.evaluate.steps import StepFailed

    try:
        load_plan(args.size)  # checked before anything is written; run_cycle loads it again
    except ValueError as e:
        raise InputError(f"--size: {e}") from None
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    if rows is not None:
        try:
            get_variants(rows)
        except ValueError as e:
            raise InputError(f"--rows: {e}") from None
        if not rows:
            raise InputError(f"--rows {args.rows!r} names no row")
    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"--seeds {args.seeds!r}: give a comma list of integers, e.g. 0,1,2") from None
        if not seeds:
            raise InputError(f"--seeds {args.seeds!r} names no seed")
    out = check_output_dir(args.out, "--out")
    with OutputLock(out, "--out"):  # the steps lock their own outputs too
        try:
            result = run_cycle(out, args.size, rows, seeds)
        except (StepFailed, ValueError) as e:
            log.error("%s", e)
            return 1
        table = write_report(result)
    print(table)
    return 0
