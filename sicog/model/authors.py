"""`sicog import-checkpoint --from authors`: a checkpoint saved by the authors' code, in our format.

Their checkpoint is a LLaVA-Qwen folder: `config.json` (Qwen2 fields plus `mm_*` fields),
safetensors weights (one file or shards with an index) and the Qwen2 tokenizer. Their tensor
names and ours (our checkpoint names, `sicog.model.modeling.CHECKPOINT_PREFIXES`):

| theirs | ours |
|---|---|
| `model.embed_tokens.*`, `model.layers.N.*`, `model.norm.*`, `lm_head.*` | `language_model.model.*`, `language_model.lm_head.*` |
| `model.vision_tower.vision_tower.vision_model.*` | `vision_tower.*` (transformers 5 names) |
| `model.mm_projector.{query, kv_proj, ln_q, ln_kv, ln_post}` | `projector.*` (same names) |
| `model.mm_projector.attn.in_proj_{weight,bias}` | split in three: `projector.{q,k,v}_proj.*` |
| `model.mm_projector.attn.out_proj.*` | `projector.out_proj.*` |
| `model.mm_projector.proj` (applied as `x @ proj`) | `projector.proj.weight` (a Linear: transposed) |
| `model.mm_projector.pos_embed` (their fixed sin-cos table) | not stored: recomputed by `sincos_table` |

`pos_embed` is frozen in their code, so it is checked, not carried over: it must equal our table
rounded to the checkpoint's dtype (the importer refuses otherwise; the report gives the largest
difference). Our resampler rounds its table to the compute dtype in the same way, so a bf16
checkpoint computes with the same table values as theirs.

The imported model uses the authors' conventions: separator ids 13 / 29892 (LLaMA's `\\n` and
`,`, which their weights were trained with), query grid from the checkpoint (12 at paper scale),
`vision_feature_layer` from `mm_vision_select_layer` (-2), up to 7 slices of the CLIP image size.
`<image>` is added to the tokenizer without resizing the embeddings (Qwen2 reserves 152,064 rows
for 151,646 tokens). Unknown or missing tensors stop the import with their names; the mapping is
written to `import_report.json`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, Qwen2Config

from sicog.data.tokens import IMAGE_TOKEN

from .build import _set_generation_ids, _set_special_ids, add_special_tokens
from .configuration import SicogConfig
from .modeling import SicogForConditionalGeneration, checkpoint_key
from .precision import DTYPES, dtype_named
from .processing import SicogProcessor
from .resampler import sincos_table

log = logging.getLogger(__name__)

SEPARATOR_IDS = [13, 29892]      # their NEWLINE_TOKEN and DOT_TOKEN
HEAD_DIM = 128                   # their builder: num_heads = hidden_size // 128
MAX_SLICES = 7                   # their generation and training calls
EVAL_LONG_SIDE = 1024
POS_EMBED_TOLERANCE = 1e-6
# buffers older transformers versions saved; they are recomputed, never loaded
IGNORED_SUFFIXES = ("embeddings.position_ids", "rotary_emb.inv_freq")
_PREFIXES = (
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower."),
    ("model.mm_projector.", "projector."),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
_RESAMPLER_SAME = ("query", "kv_proj.weight", "ln_q.weight", "ln_q.bias", "ln_kv.weight", "ln_kv.bias",
                   "ln_post.weight", "ln_post.bias", "attn.out_proj.weight", "attn.out_proj.bias")


class CheckpointImportError(ValueError):
    """A checkpoint that cannot be imported (unknown or missing tensors, bad shapes, bad config)."""


def map_resampler(tensors: dict[str, torch.Tensor], dst: str = "") -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Their `AdaptSpatialResampler_v1` state dict (names without prefix) -> ours (names prefixed by `dst`).

    Returns the mapped tensors and one report row per source tensor. Raises on unknown or
    missing names and on a `pos_embed` that is not the fixed table.
    """
    needed = set(_RESAMPLER_SAME) | {"attn.in_proj_weight", "attn.in_proj_bias", "proj", "pos_embed"}
    unknown = sorted(set(tensors) - needed)
    missing = sorted(needed - set(tensors))
    if unknown or missing:
        raise CheckpointImportError(f"resampler tensors: unknown {unknown}, missing {missing}")
    out: dict[str, torch.Tensor] = {}
    rows: list[dict] = []
    for name in _RESAMPLER_SAME:
        ours = dst + name.removeprefix("attn.")
        out[ours] = tensors[name]
        rows.append({"from": name, "to": [ours], "transform": "copy"})
    for kind in ("weight", "bias"):
        t = tensors[f"attn.in_proj_{kind}"]
        if t.shape[0] % 3:
            raise CheckpointImportError(f"attn.in_proj_{kind} has {t.shape[0]} rows, not a multiple of 3")
        names = [f"{dst}{p}_proj.{kind}" for p in "qkv"]
        out.update(zip(names, t.chunk(3, dim=0)))
        rows.append({"from": f"attn.in_proj_{kind}", "to": names, "transform": "split q|k|v along dim 0"})
    out[dst + "proj.weight"] = tensors["proj"].t().contiguous()
    rows.append({"from": "proj", "to": [dst + "proj.weight"], "transform": "transpose (x @ proj -> Linear)"})
    pos = tensors["pos_embed"]
    grid = math.isqrt(pos.shape[0])
    if grid * grid != pos.shape[0] or pos.shape != tensors["query"].shape:
        raise CheckpointImportError(f"pos_embed {tuple(pos.shape)} does not match query {tuple(tensors['query'].shape)}")
    ref = sincos_table(grid, pos.shape[1]).to(pos.dtype).float()
    diff = (pos.float() - ref).abs().max().item()
    if diff > POS_EMBED_TOLERANCE:
        raise CheckpointImportError(f"pos_embed differs from the fixed {grid}x{grid} sin-cos table by {diff:.3g}: "
                           "not a table this resampler can reproduce")
    rows.append({"from": "pos_embed", "to": [], "transform": f"checked against the recomputed table "
                 f"(max abs diff {diff:.3g}, dtype {str(pos.dtype).removeprefix('torch.')}); not stored"})
    return out, rows


def map_state(tensors: dict[str, torch.Tensor], tie_word_embeddings: bool) -> tuple[dict, list[dict]]:
    """Their full LLaVA-Qwen state dict -> ours, with a report row per source tensor."""
    resampler_src = "model.mm_projector."
    res = {k.removeprefix(resampler_src): v for k, v in tensors.items() if k.startswith(resampler_src)}
    if not res:
        raise CheckpointImportError("no model.mm_projector.* tensors: not a checkpoint of the authors' uhd_v1 model")
    out, res_rows = map_resampler(res, "projector.")
    rows = [dict(r, **{"from": resampler_src + r["from"]}) for r in res_rows]
    unknown = []
    for name, t in tensors.items():
        if name.startswith(resampler_src):
            continue
        if name.endswith(IGNORED_SUFFIXES):
            rows.append({"from": name, "to": [], "transform": "buffer, recomputed; not stored"})
            continue
        if name == "lm_head.weight" and tie_word_embeddings:
            rows.append({"from": name, "to": [], "transform": "tied to the input embeddings; not stored"})
            continue
        for src, dst in _PREFIXES:
            if name.startswith(src):
                out[dst + name[len(src):]] = t
                rows.append({"from": name, "to": [dst + name[len(src):]], "transform": "copy"})
                break
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointImportError(f"{len(unknown)} unknown tensor(s) in the checkpoint: {unknown[:20]}")
    return out, rows


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors checkpoint folder (one file or shards)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" (found {pickled}: convert them to safetensors first; pickle files are not loaded)" if pickled else ""
        raise CheckpointImportError(f"no *.safetensors files in {folder}{hint}")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                if k in tensors:
                    raise CheckpointImportError(f"tensor {k} appears in more than one file")
                tensors[k] = sf.get_tensor(k)
    return tensors


def text_config_from(theirs: dict, vocab_size: int) -> Qwen2Config:
    known = set(Qwen2Config().to_dict()) | {"rope_theta", "rope_scaling"}
    drop = {"architectures", "_name_or_path", "model_type", "transformers_version", "dtype", "vocab_size"}
    kwargs = {k: v for k, v in theirs.items() if k in known and k not in drop}
    return Qwen2Config(**kwargs, vocab_size=vocab_size)


def vision_config_from(theirs: dict, vision_config: str | Path | None) -> CLIPVisionConfig:
    """The CLIP vision config: `vision_config` (a CLIP folder or config.json), else their mm_vision_tower folder."""
    path = vision_config or theirs.get("mm_vision_tower")
    if not path or not Path(path).exists():
        raise CheckpointImportError(
            "the authors' config does not describe the vision tower; pass --vision-config with the CLIP "
            f"folder (or its config.json) the checkpoint was trained from (mm_vision_tower={theirs.get('mm_vision_tower')!r})"
        )
    p = Path(path)
    cfg = AutoConfig.from_pretrained(str(p.parent if p.is_file() else p), trust_remote_code=False)
    if cfg.model_type == "clip":
        cfg = cfg.vision_config
    if cfg.model_type != "clip_vision_model":
        raise CheckpointImportError(f"{p}: model_type {cfg.model_type!r} is not a CLIP config")
    return cfg


def sicog_config(theirs: dict, vision: CLIPVisionConfig, tensors: dict[str, torch.Tensor], image_token_id: int,
                 max_slices: int = MAX_SLICES, separator_token_ids: list[int] | None = None,
                 eval_long_side: int | None = EVAL_LONG_SIDE) -> SicogConfig:
    """Our config for their checkpoint: their layout conventions, the query grid read from the weights."""
    embed = tensors.get("model.embed_tokens.weight")
    query = tensors.get("model.mm_projector.query")
    if embed is None or query is None:
        raise CheckpointImportError("missing model.embed_tokens.weight or model.mm_projector.query")
    grid = math.isqrt(query.shape[0])
    if grid * grid != query.shape[0]:
        raise CheckpointImportError(f"mm_projector.query has {query.shape[0]} rows, not a square grid")
    text = text_config_from(theirs, embed.shape[0])
    layer = theirs.get("mm_vision_select_layer", -2)
    return SicogConfig(
        vision_config=vision, text_config=text, projector_type="resampler",
        image_scale=int(vision.image_size), max_slices=max_slices, query_grid=grid,
        resampler_head_dim=HEAD_DIM, vision_feature_layer=layer, eval_long_side=eval_long_side,
        image_token_id=image_token_id,
        separator_token_ids=list(separator_token_ids or SEPARATOR_IDS),
    )


def write_imported(config: SicogConfig, tensors: dict[str, torch.Tensor], out_dir: str | Path,
                   dtype: torch.dtype | None = None) -> list[dict]:
    """Writes their tensors under our names (`model.safetensors`) and our config to `out_dir`.

    Strict: every parameter of our model must come from the checkpoint and every tensor must map
    to one. Returns the report rows. Load the result with `SicogForConditionalGeneration.from_pretrained`.
    """
    mapped, rows = map_state(tensors, config.text_config.tie_word_embeddings)
    with torch.device("meta"):
        ours = {checkpoint_key(k): v for k, v in SicogForConditionalGeneration(config).state_dict().items()}
    if config.text_config.tie_word_embeddings:
        ours.pop("language_model.lm_head.weight", None)
    missing = sorted(set(ours) - set(mapped))
    unknown = sorted(set(mapped) - set(ours))
    if missing or unknown:
        raise CheckpointImportError(f"tensors missing from the checkpoint: {missing[:20]}; "
                                    f"not in our model: {unknown[:20]}")
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in mapped.items() if v.shape != ours[k].shape]
    if bad:
        raise CheckpointImportError(f"shape mismatches: {bad[:20]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = dtype or mapped["language_model.model.embed_tokens.weight"].dtype
    config.dtype = dtype
    config.save_pretrained(str(out))
    save_file({k: v.to(dtype).contiguous() for k, v in mapped.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    return rows


def load_imported(out_dir: str | Path) -> SicogForConditionalGeneration:
    """The model written by `write_imported`, loaded back strictly (nothing missing or unused)."""
    model, info = SicogForConditionalGeneration.from_pretrained(str(out_dir), output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise CheckpointImportError(f"the imported checkpoint does not load cleanly: {problems}")
    _set_generation_ids(model)
    return model.eval()


def import_authors(in_dir: str | Path, out_dir: str | Path, vision_config: str | Path | None = None,
                   max_slices: int = MAX_SLICES, dtype: str = "auto",
                   separator_token_ids: list[int] | None = None) -> dict:
    """Converts their checkpoint folder into a SICOG model + processor folder; returns the report."""
    src, out = Path(in_dir), Path(out_dir)
    cfg_file = src / "config.json"
    if not cfg_file.is_file():
        raise CheckpointImportError(f"{cfg_file} not found: not a checkpoint folder")
    theirs = json.loads(cfg_file.read_text())
    tensors = read_tensors(src)
    tok = add_special_tokens(AutoTokenizer.from_pretrained(str(src), trust_remote_code=False))
    rows_available = tensors["model.embed_tokens.weight"].shape[0] if "model.embed_tokens.weight" in tensors else 0
    if len(tok) > rows_available:
        raise CheckpointImportError(f"the tokenizer has {len(tok)} tokens with <image> but the embeddings only "
                           f"{rows_available} rows; the importer does not resize embeddings")
    seps = list(separator_token_ids or SEPARATOR_IDS)
    if max(seps) >= rows_available or min(seps) < 0:
        raise CheckpointImportError(f"separator ids {seps} do not fit the {rows_available}-row embeddings")
    config = sicog_config(theirs, vision_config_from(theirs, vision_config), tensors,
                          tok.convert_tokens_to_ids(IMAGE_TOKEN), max_slices, seps)
    _set_special_ids(config.text_config, tok)
    n_tensors = len(tensors)
    rows = write_imported(config, tensors, out, None if dtype == "auto" else dtype_named(dtype))
    del tensors
    model = load_imported(out)                      # checks that it loads back cleanly
    model.config.save_pretrained(str(out))
    model.generation_config.save_pretrained(str(out))
    SicogProcessor.from_config(model.config, tok).save_pretrained(str(out))
    report = {
        "from": "authors", "source": str(src), "tensors": n_tensors, "mapped": rows,
        "settings": {"separator_token_ids": config.separator_token_ids, "query_grid": config.query_grid,
                     "vision_feature_layer": config.vision_feature_layer, "max_slices": config.max_slices,
                     "image_scale": config.image_scale, "image_token_id": config.image_token_id,
                     "tokenizer_size": len(tok), "embedding_rows": rows_available,
                     "dtype": str(model.config.dtype).removeprefix("torch.")},
    }
    (out / "import_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("imported %d tensors from %s into %s (report: import_report.json)", n_tensors, src, out)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, choices=["authors"],
                        help="checkpoint layout: authors = a checkpoint saved by the authors' LLaVA-UHD code")
    parser.add_argument("--in", dest="in_dir", required=True, help="their checkpoint folder (safetensors)")
    parser.add_argument("--out", required=True, help="output folder (our model, processor, import_report.json)")
    parser.add_argument("--vision-config", default=None,
                        help="CLIP folder or config.json of the vision tower (default: their mm_vision_tower)")
    parser.add_argument("--max-slices", type=int, default=MAX_SLICES)
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="weights dtype (auto: as stored)")
    parser.add_argument("--separator-token-ids", type=int, nargs=2, default=None, metavar=("ROW", "OVERVIEW"),
                        help="separator ids their weights were trained with (default: 13 29892)")


def run(args: argparse.Namespace) -> int:
    from sicog.data.checks import check_input_dir, check_output_dir
    from sicog.data.output_lock import OutputLock

    check_input_dir(args.in_dir, "--in", "the authors' checkpoint folder")
    out = check_output_dir(args.out, "--out")
    with OutputLock(out, "--out"):  # one writer per output
        return _import(args)


def _import(args: argparse.Namespace) -> int:
    try:
        import_authors(args.in_dir, args.out, args.vision_config, args.max_slices, args.dtype,
                       args.separator_token_ids)
    except (CheckpointImportError, OSError) as e:
        log.error("import failed: %s", e)
        return 1
    return 0
