"""Random-weight checkpoints of published Qwen2 configurations, exported the two ways an operator would.

For each model (see published.py):

1. a checkpoint: `AutoModelForCausalLM.from_config` with a fixed seed, saved with
   `save_pretrained` (safetensors), our tokenizer beside it;
2. (a) Hugging Face Optimum's `text-generation-with-past` export: FP32, FP16 (`dtype="fp16"`), and
   INT8 (`onnxruntime.quantization.quantize_dynamic` on the FP32 file, the settings r1-edge-mini uses);
3. (b) onnxruntime-genai's model builder (`python -m onnxruntime_genai.models.builder -i <checkpoint>
   -e cpu`), FP32 and INT4: a `GroupQueryAttention` graph with a preallocated past/present buffer.

Every output directory is left as the exporter wrote it, except that the genai builder writes no
`config.json`/`generation_config.json`, which are copied from the checkpoint (r1-edge's loader reads
them), and the tokenizer files are ours (models/r1-edge-mini/).

    make.sh                       both published models, every layout and dtype, into the cache
    make.sh --only qwen2.5-0.5b-instruct --optimum-dtypes fp32,int8 --genai-dtypes fp32
    make.sh --tiny                the committed test variants, models/qwen2-tiny-{optimum,genai}/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import published

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
TOKENIZER_DIR = REPO / "models" / "r1-edge-mini"
SEED = 20240607
# Our tokenizer's special ids (models/r1-edge-mini/tokenizer.json): <|endoftext|> 0, <|im_end|> 2.
OUR_PAD, OUR_EOS = 0, 2
OUR_VOCAB = 2048
OPTIMUM_DTYPES = ("fp32", "fp16", "int8")
GENAI_DTYPES = ("fp32", "int8", "int4")
DEFAULT_GENAI_DTYPES = ("fp32", "int4")


def log(*args: object) -> None:
    print("[real]", *args, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def configs(name: str, tiny: bool, vocab: str) -> tuple[dict, dict]:
    """config.json and generation_config.json values for `name`, with our tokenizer's special ids."""
    base, generation = published.PUBLISHED["qwen2.5-0.5b-instruct" if tiny else name]
    config = dict(base)
    generation = dict(generation)
    if tiny:
        config.update(published.TINY_OVERRIDES)
    if vocab == "tokenizer":
        config["vocab_size"] = OUR_VOCAB
    elif config["vocab_size"] < OUR_VOCAB:
        raise SystemExit(f"{name}: vocab_size {config['vocab_size']} is smaller than our tokenizer's {OUR_VOCAB}")
    # Our tokenizer's ids are a prefix of a published-size vocabulary (ids >= 2048 have no text).
    config.update(bos_token_id=OUR_PAD, eos_token_id=OUR_EOS)
    generation.update(bos_token_id=OUR_PAD, pad_token_id=OUR_PAD, eos_token_id=[OUR_EOS, OUR_PAD])
    config["torch_dtype"] = "float32"
    return config, generation


def copy_tokenizer(dst: Path, context: int) -> None:
    shutil.copyfile(TOKENIZER_DIR / "tokenizer.json", dst / "tokenizer.json")
    tokenizer_config = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = context
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")


def build_checkpoint(dst: Path, config: dict, generation: dict) -> dict:
    """Builds (or reuses, when built from the same values and seed) a random-weight checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    recipe = {"seed": SEED, "config": config, "generation": generation}
    stamp = dst / "r1-build.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("recipe") == recipe:
        log(f"{dst.name}: reusing (same values and seed)")
        return json.loads(stamp.read_text())["built"]
    started = time.monotonic()
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**config), torch_dtype=torch.float32)
    model.eval()
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(dst, safe_serialization=True)
    copy_tokenizer(dst, config["max_position_embeddings"])
    params = sum(p.numel() for p in model.parameters())
    del model
    built = {"parameters": params, "seconds": round(time.monotonic() - started, 1)}
    stamp.write_text(json.dumps({"recipe": recipe, "built": built}, indent=2) + "\n")
    return built


def export_optimum(checkpoint: Path, dst: Path, dtype: str, validate: bool) -> None:
    from optimum.exporters.onnx import main_export

    main_export(
        str(checkpoint),
        output=str(dst),
        task="text-generation-with-past",
        device="cpu",
        dtype=dtype,
        do_validation=validate,
        local_files_only=True,
    )


def fold_constant_transposes(src: Path, work: Path) -> Path | None:
    """Optimum stores a tied LM head as `Transpose(model.embed_tokens.weight)` feeding the MatMul.
    quantize_dynamic then quantizes the table through the Transpose and leaves the LM head as a
    DequantizeLinear of all of it plus a float MatMul: the whole table is dequantized on every run
    (the INT8 Qwen2.5-0.5B decoded ~2.4x slower than FP32). Folding the Transpose into an initializer
    makes it an ordinary constant weight, quantized to a MatMulInteger like the others. Returns the
    rewritten model, or None when there is nothing to fold."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src / "model.onnx"))
    initializers = {i.name: i for i in model.graph.initializer}
    folded = []
    for node in list(model.graph.node):
        if node.op_type == "Transpose" and node.input[0] in initializers:
            array = numpy_helper.to_array(initializers[node.input[0]])
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            transposed = np.ascontiguousarray(array.transpose(perm))
            model.graph.initializer.append(numpy_helper.from_array(transposed, node.output[0]))
            model.graph.node.remove(node)
            folded.append(f"{node.input[0]} {list(array.shape)} -> {node.output[0]}")
    if not folded:
        return None
    log("folded into initializers before quantization:", "; ".join(folded))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    onnx.save(model, str(work / "model.onnx"), save_as_external_data=True, location="model.onnx_data")
    return work / "model.onnx"


def quantize_int8(src: Path, dst: Path, work: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx"):
            shutil.copyfile(f, dst / f.name)
    large = any(f.name != "model.onnx" and f.name.startswith("model.onnx") for f in src.iterdir())
    folded = fold_constant_transposes(src, work)
    quantize_dynamic(
        str(folded or src / "model.onnx"),
        str(dst / "model.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=False,
        use_external_data_format=large,
        extra_options={"MatMulConstBOnly": True},
    )
    if folded:
        shutil.rmtree(work)


def export_genai(checkpoint: Path, dst: Path, dtype: str, cache: Path) -> None:
    # The builder runs in its own venv (make.sh's R1_GENAI_PYTHON): onnxruntime-genai 0.18's builder
    # imports transformers 5 classes, while optimum-onnx 0.1.0 requires transformers < 4.58.
    cmd = [
        os.environ.get("R1_GENAI_PYTHON", sys.executable),
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(checkpoint),
        "-o",
        str(dst),
        "-p",
        dtype,
        "-e",
        "cpu",
        "-c",
        str(cache),
    ]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True)
    # r1-edge reads config.json and generation_config.json; the builder keeps their values only in
    # genai_config.json.
    for name in ("config.json", "generation_config.json"):
        if not (dst / name).exists():
            shutil.copyfile(checkpoint / name, dst / name)


def describe(dst: Path) -> dict:
    """Sizes and hashes of an output directory, and the graph's inputs/outputs as ONNX Runtime sees them."""
    import onnxruntime as ort

    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(dst.iterdir()) if p.is_file()}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(dst / "model.onnx"), so, providers=["CPUExecutionProvider"])
    io = {
        "inputs": [[i.name, i.type, i.shape] for i in session.get_inputs()],
        "outputs": [[o.name, o.type, o.shape] for o in session.get_outputs()],
    }
    return {"bytes": dir_size(dst), "files": files, "graph": io}


def run(args: argparse.Namespace) -> int:
    import logging

    # Optimum reports its ONNX-vs-PyTorch validation at INFO.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("torch", "onnxruntime", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from optimum.utils import logging as optimum_logging

    optimum_logging.set_verbosity_info()
    cache = Path(os.environ.get("R1_CACHE_DIR", Path.home() / ".cache" / "r1-hybrid"))
    out = Path(args.out) if args.out else (REPO / "models" if args.tiny else cache / "real-models")
    work = cache / "real-work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    names = [published.TINY_NAME] if args.tiny else ([args.only] if args.only else list(published.PUBLISHED))
    layouts = args.layouts.split(",")
    report_path = Path(args.report) if args.report else (HERE / "tiny-report.json" if args.tiny else out / "report.json")
    # A full-size run adds to the report of earlier runs into the same directory.
    report: dict = json.loads(report_path.read_text()) if report_path.exists() and not args.tiny else {}
    report.update(seed=SEED, versions=versions())
    report.setdefault("models", {})
    for name in names:
        vocab = args.vocab or ("tokenizer" if args.tiny else "published")
        config, generation = configs(name, args.tiny, vocab)
        checkpoint = work / f"{name}-checkpoint"
        log(f"{name}: checkpoint -> {checkpoint}")
        entry: dict = report["models"].setdefault(name, {})
        entry.update(config=config, vocab=vocab, checkpoint=build_checkpoint(checkpoint, config, generation))
        log(f"{name}: {entry['checkpoint']}")
        entry.setdefault("exports", {})
        for layout in layouts:
            if layout == "optimum":
                dtypes, allowed = args.optimum_dtypes.split(","), OPTIMUM_DTYPES
            else:
                dtypes, allowed = args.genai_dtypes.split(","), GENAI_DTYPES
            if not set(dtypes) <= set(allowed):
                raise SystemExit(f"{layout}: dtypes {dtypes} (allowed: {allowed})")
            if args.tiny:
                dtypes = ["fp32"]
            for dtype in dtypes:
                label = f"{name}-{layout}" if args.tiny else f"{name}-{layout}-{dtype}"
                dst = out / label
                tmp = out / f".{label}.tmp"
                if tmp.exists():
                    shutil.rmtree(tmp)
                started = time.monotonic()
                log(f"{label}: exporting")
                if layout == "optimum" and dtype == "int8":
                    fp32 = out / f"{name}-optimum-fp32"
                    if not (fp32 / "model.onnx").exists():
                        raise SystemExit(f"{label}: needs {fp32} (export fp32 first)")
                    quantize_int8(fp32, tmp, work / f"{label}-folded")
                elif layout == "optimum":
                    export_optimum(checkpoint, tmp, dtype, validate=args.tiny or args.validate)
                elif layout == "genai":
                    export_genai(checkpoint, tmp, dtype, work / "genai-cache")
                else:
                    raise SystemExit(f"unknown layout {layout}")
                if not (tmp / "tokenizer_config.json").exists() or not (tmp / "tokenizer.json").exists():
                    raise SystemExit(f"{label}: the exporter wrote no tokenizer files")
                seconds = round(time.monotonic() - started, 1)
                if dst.exists():
                    shutil.rmtree(dst)
                tmp.rename(dst)
                entry["exports"][label] = {"seconds": seconds, **describe(dst)}
                log(f"{label}: {entry['exports'][label]['bytes'] / 1e6:.1f} MB in {seconds} s")
                report_path.write_text(json.dumps(report, indent=2) + "\n")
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"report -> {report_path}")
    return 0


def versions() -> dict:
    from importlib.metadata import version

    optimum = {p: version(p) for p in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")}
    probe = "import json; from importlib.metadata import version as v; print(json.dumps({p: v(p) for p in %r}))" % (
        ["torch", "transformers", "onnxruntime-genai", "onnx-ir"],
    )
    genai_python = os.environ.get("R1_GENAI_PYTHON", sys.executable)
    genai = subprocess.run([genai_python, "-c", probe], check=True, capture_output=True, text=True).stdout
    return {"optimum-venv": optimum, "genai-venv": json.loads(genai)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(published.PUBLISHED), help="one published model")
    parser.add_argument("--tiny", action="store_true", help="the committed reduced variant (into models/)")
    parser.add_argument("--out", help="output root (default: models/ with --tiny, else the cache)")
    parser.add_argument("--layouts", default="optimum,genai", help="comma list of optimum, genai")
    parser.add_argument("--optimum-dtypes", default=",".join(OPTIMUM_DTYPES), help="comma list of fp32, fp16, int8")
    parser.add_argument(
        "--genai-dtypes", default=",".join(DEFAULT_GENAI_DTYPES), help="comma list of fp32, int8, int4"
    )
    parser.add_argument(
        "--vocab",
        choices=["published", "tokenizer"],
        help="vocab_size: the published one (default for full size) or our tokenizer's 2048 (default with --tiny)",
    )
    parser.add_argument("--validate", action="store_true", help="Optimum's own ONNX-vs-PyTorch check (always on with --tiny)")
    parser.add_argument("--report", help="where to write the report (default: tiny-report.json or <out>/report.json)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
