"""The steps of the SICOG cycle for one plan. Each method runs (or, once finished, skips) one step or a
few, and returns what they produced as typed paths (`sicog.cycle.outputs`): a later step takes its
inputs from those, never from a folder name of its own making.

Steps that two rows share (a warm-up model, a candidate pool, a curation) get the same step name, so
they run once.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from sicog.cycle.outputs import (Candidates, Curation, Evaluation, Folder, Generated, Model, Pools, Probe, Records,
                                 RowModels, SeedData)
from sicog.cycle.plans import Plan
from sicog.cycle.steps import StepRunner
from sicog.cycle.variants import CAPTION_MODES, REASONING_MODES, VARIANTS, Variant
from sicog.data.records import read_records, write_jsonl
from sicog.generate.settings import AUGMENT_METHODS, SamplingSettings

SAMPLING = SamplingSettings()   # the generation defaults, written out in every step's command
NOISY_AUGMENTS = ",".join(AUGMENT_METHODS)   # corruptions of the DPO warm-up's pairs


class Cycle:
    """The steps of the cycle for one plan, as methods that return what they produced."""

    def __init__(self, out: Path, plan: Plan):
        self.out, self.plan = out, plan
        self.run = StepRunner(out)
        self.world = out / "world"
        self.trained: dict[str, Model] = {}          # every training step requested, by step name

    # ------------------------------------------------------------------ shared foundations
    def build_world(self) -> Folder:
        self.run.sicog("world", ["world", "build", "--out", self.world, "--size", self.plan.world,
                                 "--seed", self.plan.world_seed])
        return Folder("world", self.world)

    def base_model(self) -> Model:
        pre = self.run.folder("pretrain")
        args = ["world", "pretrain", "--world", self.world, "--out", pre]
        if self.plan.pretrain_steps:
            args += ["--steps", self.plan.pretrain_steps]
        self.run.sicog("pretrain", args)
        model = self.run.folder("base") / "model"
        self.run.sicog("base", ["build-model", "--vision", pre / "clip", "--llm", pre / "llm", "--tier", "tiny",
                                "--out", model])
        return Model("base", model)

    def train(self, name: str, stage: str, data: Path, seed: int, start: list, overrides: str | None = None) -> Model:
        """`sicog train --stage STAGE` with the plan's flags for `overrides` (default: the stage's own)."""
        model = self.run.folder(name) / "model"
        args = ["train", "--stage", stage, "--profile", "tiny", "--data-path", data, "--image-folder", self.world,
                "--output_dir", model, "--seed", seed, *start]
        for key, value in self.plan.overrides(overrides or stage).items():
            args += [f"--{key}", value]
        self.run.sicog(name, args)
        self.trained[name] = Model(name, model)
        return self.trained[name]

    def annotations(self) -> SeedData:
        """The stage-0 seed data: CoD/DD through the teacher, CoT/short through the converter."""
        data = self.world / "data"
        cod, cot = self.run.folder("annotate"), self.run.folder("convert_cot")
        self.run.sicog("annotate", ["annotate-cod", "--input", data / "cod_seed_raw.jsonl",
                                    "--image-folder", self.world, "--output-cod-dir", cod / "cod",
                                    "--output-dd-dir", cod / "dd", "--world-teacher", self.world, "--concurrency", 4])
        self.run.sicog("convert_cot", ["convert-cot", "--input", data / "llava_cot_seed.json",
                                       "--output-cot-dir", cot / "cot", "--output-short-dir", cot / "short"])
        return SeedData({"cod": Records("annotate", cod / "cod" / "cod.jsonl"),
                         "dd": Records("annotate", cod / "dd" / "dd.jsonl"),
                         "cot": Records("convert_cot", cot / "cot" / "cot.jsonl"),
                         "short": Records("convert_cot", cot / "short" / "short.jsonl")})

    # ------------------------------------------------------------------ per seed
    def stage1(self, seed: int, base: Model) -> Model:
        return self.train(f"stage1/s{seed}", "stage1", self.world / "data" / "align.jsonl", seed,
                          ["--model-name-or-path", base.model])

    def stage2(self, name: str, seed: int, start: list) -> Model:
        """Stage 2 from `start`. With the plan's `stage2_first`, that file of the world's data is trained
        alone first (stage 2's rates, its own schedule, flags `stage_overrides.stage2_first`), and
        all of `sft.jsonl` follows from the model it made."""
        if self.plan.stage2_first:
            first = self.train(f"{name}-first", "stage2", self.world / "data" / self.plan.stage2_first, seed, start,
                               overrides="stage2_first")
            start = ["--model-name-or-path", first.model]
        return self.train(name, "stage2", self.world / "data" / "sft.jsonl", seed, start)

    def baseline(self, seed: int, stage1: Model) -> Model:
        return self.stage2(f"stage2/baseline-s{seed}", seed, ["--mm-projector-checkpoint", stage1.model])

    def mixture(self, name: str, files: list[Path]) -> Path:
        """A mixture YAML over `files` (each with the world as image folder)."""
        path = self.run.folder("mixtures") / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [{"json_path": str(f.resolve()), "image_folder": str(self.world.resolve()), "sampling_strategy": "all"}
                   for f in files]
        path.write_text(yaml.safe_dump(entries, sort_keys=False))
        return path

    def warmup(self, kind: str, mode: str, seed: int, start: Model, seed_data: SeedData, tag: str) -> Model:
        """Stage 0 from `start` on the seed data of a caption or reasoning mode."""
        names = CAPTION_MODES[mode]["seed_data"] if kind == "perception" else REASONING_MODES[mode]["seed_data"]
        names = (names,) if isinstance(names, str) else names
        data = self.mixture(f"stage0-{kind}-{mode}", [seed_data.get(n) for n in names])
        return self.train(f"stage0/{kind}-{mode}-{tag}s{seed}", "stage0", data, seed,
                          ["--model-name-or-path", start.model])

    def pools(self) -> Pools:
        """The unlabeled pools used for generation: the first `pool_images` / `pool_questions` records."""
        def cut(folder: Path) -> None:
            for name in ("pool_images", "pool_questions"):
                records = read_records(self.world / "data" / f"{name}.jsonl")
                limit = self.plan.pool_limit(name)
                write_jsonl(folder / f"{name}.jsonl", records[:limit] if limit else records)
        folder = self.run.python("pools", cut, "first records of the world's pools (plan: pool_images, pool_questions)")
        return Pools("pools", folder / "pool_images.jsonl", folder / "pool_questions.jsonl")

    def generate(self, name: str, model: Model, task: str, prompt: str, seed: int, augment: str = "") -> Candidates:
        data = self.pools().for_task(task)
        folder = self.run.folder(name)
        tokens = self.plan.caption_max_new_tokens if task == "caption" else self.plan.reasoning_max_new_tokens
        args = ["generate", "--model", model.model, "--data", data, "--image-folder", self.world,
                "--out", folder / "candidates.jsonl", "--task", task, "--prompt", prompt,
                "--num-candidates", self.plan.num_candidates, "--max-new-tokens", tokens, "--seed", seed,
                "--batch-size", self.plan.generate_batch_size, "--temperature", SAMPLING.temperature,
                "--top-p", SAMPLING.top_p]
        if augment:
            args += ["--augment", augment]
        self.run.sicog(f"{name}/run", args)
        self.run.sicog(f"{name}/merge", ["merge-candidates", "--inputs", data,
                                         "--shards", str(folder / "candidates.jsonl.rank*-of-*.jsonl"),
                                         "--out", folder / "merged.jsonl"])
        return Candidates(f"{name}/merge", folder / "merged.jsonl")

    def curate(self, name: str, candidates: Candidates, model: Model, method: str = "embedding",
               seed: int = 0) -> Curation:
        taus = ",".join(str(t) for t in self.plan.thresholds)
        folder = self.run.sicog(name, ["curate", "--candidates", candidates.existing(),
                                       "--out", self.run.folder(name), "--thresholds", taus, "--method", method,
                                       "--generator", model.model, "--seed", seed])
        return Curation(name, folder)

    def gold_for_pool(self, kind: str) -> Records:
        """The world's gold texts (`cod` captions or `cot` answers) for the ids of the pool in use."""
        pool = self.pools().for_task("caption" if kind == "cod" else "reasoning")

        def select(folder: Path) -> None:
            ids = {str(r["id"]) for r in read_records(pool)}
            gold = read_records(self.world / "data" / "pool_gold" / f"{kind}.jsonl")
            write_jsonl(folder / f"{kind}.jsonl", [r for r in gold if str(r["id"]) in ids])
        name = f"oracle/{kind}"
        return Records(name, self.run.python(name, select, f"gold {kind} texts of the pool in use") / f"{kind}.jsonl")

    # ------------------------------------------------------------------ a whole variant
    def generated_data(self, v: Variant, seed: int, start: Model, seed_data: SeedData) -> list[Generated]:
        """The self-generated stage-1.5 data of variant `v`, generated from `start`."""
        tag = f"r{v.round}-" if v.round > 1 else ""
        made = []
        for kind, mode in (("perception", v.captions), ("reasoning", v.reasoning)):
            if mode is None:
                continue
            task = "caption" if kind == "perception" else "reasoning"
            prompt = (CAPTION_MODES if task == "caption" else REASONING_MODES)[mode]["prompt"]
            model = warm = self.warmup(kind, mode, seed, start, seed_data, tag)
            gen_tag = f"{kind}-{mode}-{tag}s{seed}"
            if kind == "reasoning" and v.reasoning_warmup == "dpo":
                model = self.dpo_warmup(warm, seed, gen_tag)
                gen_tag = f"{kind}-{mode}-dpo-{tag}s{seed}"
            candidates = self.generate(f"generate/{gen_tag}", model, task, prompt, seed)
            if v.curation == "random":   # the same curate run and record writer, only the choice differs
                curation = self.curate(f"pick/{gen_tag}", candidates, model, "random", seed)
                file = curation.curated(self.plan.threshold)
            else:
                curation = self.curate(f"curate/{gen_tag}", candidates, model)
                file = curation.curated(self.plan.threshold if v.tau is None else v.tau)
            made.append(Generated(kind, model, candidates, curation, file))
        return made

    def dpo_warmup(self, sft_model: Model, seed: int, gen_tag: str) -> Model:
        """DPO on pairs from curation and from candidates generated on corrupted images."""
        clean = self.generate(f"generate/{gen_tag}", sft_model, "reasoning", "cot-default", seed)
        curated = self.curate(f"curate/{gen_tag}", clean, sft_model)
        noisy = self.generate(f"generate/{gen_tag}-noisy", sft_model, "reasoning", "cot-default", seed,
                              augment=NOISY_AUGMENTS)
        name = f"preferences/{gen_tag}"
        pairs = Records(name, self.run.folder(name) / "pairs.jsonl")
        self.run.sicog(name, ["build-preferences", "--source", "both", "--pairs", curated.preferences,
                              "--noisy", noisy.existing(), "--curated", curated.curated(self.plan.threshold),
                              "--seed", seed, "--out", pairs.file])
        return self.train(f"stage0/dpo-{gen_tag}", "dpo", pairs.existing(), seed,
                          ["--model-name-or-path", sft_model.model])

    def variant_model(self, v: Variant, seed: int, base: Model, seed_data: SeedData,
                      done: dict[tuple[str, int], RowModels]) -> RowModels:
        """The models of row `v` for `seed`, made from the ones before it (kept in `done`)."""
        stage1 = self.stage1(seed, base)
        baseline = self.baseline(seed, stage1)
        if v.is_baseline:
            done[(v.name, seed)] = RowModels(stage1, baseline)
            return done[(v.name, seed)]
        start = baseline
        if v.round > 1:
            previous = done.get((v.previous, seed)) or self.variant_model(VARIANTS[v.previous], seed, base,
                                                                           seed_data, done)
            start = previous.final
        if v.source == "gold":
            data = ()
            files = [self.gold_for_pool(kind).file
                     for kind, mode in (("cod", v.captions), ("cot", v.reasoning)) if mode]
        else:
            data = tuple(self.generated_data(v, seed, start, seed_data))
            files = [g.file for g in data]
        s15 = self.train(f"stage1_5/{v.name}-s{seed}", "stage1_5", self.mixture(f"stage1_5-{v.name}-s{seed}", files),
                         seed, ["--mm-projector-checkpoint", stage1.model])
        final = self.stage2(f"stage2/{v.name}-s{seed}", seed, ["--model-name-or-path", s15.model])
        done[(v.name, seed)] = RowModels(stage1, final, s15, data)
        return done[(v.name, seed)]

    # ------------------------------------------------------------------ measurements
    def evaluate(self, name: str, model: Model, blind: bool = False) -> Evaluation:
        """`sicog evaluate`; `blind`: the shuffled-image control on QA and POPE (captions cost the most)."""
        args = ["evaluate", "--model", model.model, "--world", self.world, "--out", self.run.folder(name)]
        if blind:
            args += ["--images", "shuffled", "--benchmarks", "qa,pope"]
        if self.plan.eval_limit:
            args += ["--limit", self.plan.eval_limit]
        return Evaluation(name, self.run.sicog(name, args))

    def probe(self, name: str, model: Model) -> Probe:
        """`sicog probe` on the eval split: linear probes of tower and connector, own-vs-shuffled answers."""
        file = self.run.folder(name) / "probe.json"
        args = ["probe", "--model", model.model, "--world", self.world, "--split", "eval", "--out", file]
        if self.plan.eval_limit:
            args += ["--limit", self.plan.eval_limit]
        self.run.sicog(name, args)
        return Probe(name, file)

    def vote_curation(self, reasoning: Generated) -> Curation:
        """The vote-method curation of the SICOG row's reasoning candidates, for the diagnostics beside
        the embedding method."""
        return self.curate(f"{reasoning.curation.step}-vote", reasoning.candidates, reasoning.warmup, method="vote")
