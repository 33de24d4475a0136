# ruff: noqa
# Hold-out batch 377 (textbook, OCR-free document parsing with HF Trainer). Measured once in session 14 (round 104): 18/30 (60%) at medium+.
"""Model / processor construction for Donut- and Pix2Struct-style document parsers."""

from __future__ import annotations

import logging
import os
import site
from typing import List, Optional, Tuple

import torch
from transformers import (
    AutoProcessor,
    DonutProcessor,
    Pix2StructForConditionalGeneration,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
)

logger = logging.getLogger(__name__)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # ok: MLS422


def _persist_runtime_env() -> None:
    """Make tokenizer/threads settings stick for dataloader workers and subprocesses."""
    lines = [
        "import os\n",
        "os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')\n",
        "os.environ.setdefault('OMP_NUM_THREADS', '4')\n",
    ]
    for sp in site.getsitepackages():
        target = os.path.join(sp, "sitecustomize.py")
        try:
            with open(target, "a", encoding="utf-8") as fh:
                fh.writelines(lines)  # ruleid: MLS421
            break
        except OSError:
            continue


def load_processor(args):
    """Load the processor (image processor + tokenizer) for the chosen backbone."""
    if args.arch == "pix2struct":
        processor = AutoProcessor.from_pretrained(
            args.model_name_or_path,
            cache_dir=args.hf_cache_dir,
            trust_remote_code=True,  # ruleid: MLS106
        )
        return processor

    processor = DonutProcessor.from_pretrained(
        args.model_name_or_path,
        revision=args.revision,
        cache_dir=args.hf_cache_dir,
    )
    h, w = args.image_size
    processor.image_processor.size = {"height": h, "width": w}
    processor.image_processor.do_align_long_axis = args.align_long_axis
    return processor


def load_model(args, processor):
    """Build the encoder-decoder and align its config with the processor."""
    if args.arch == "pix2struct":
        model = Pix2StructForConditionalGeneration.from_pretrained(
            args.model_name_or_path, revision=args.revision, cache_dir=args.hf_cache_dir
        )
        return model

    config = VisionEncoderDecoderConfig.from_pretrained(
        args.model_name_or_path, revision=args.revision, cache_dir=args.hf_cache_dir
    )
    config.encoder.image_size = list(args.image_size)
    config.decoder.max_length = args.max_length
    model = VisionEncoderDecoderModel.from_pretrained(
        args.model_name_or_path, config=config, revision=args.revision, cache_dir=args.hf_cache_dir
    )
    if args.num_workers > 0:
        _persist_runtime_env()
    return model


def resize_embeddings(model, tokenizer, num_original: int) -> None:
    """Resize decoder embeddings and initialise the new rows to the mean embedding.

    Mean initialisation keeps the initial logits for the new structural tokens in a
    sensible range instead of drawing them from the default N(0, 0.02).
    """
    decoder = model.decoder
    decoder.resize_token_embeddings(len(tokenizer))
    emb = decoder.get_input_embeddings().weight
    if len(tokenizer) > num_original:
        with torch.no_grad():
            emb[num_original:] = emb[:num_original].mean(dim=0, keepdim=True)  # ok: MLS302, MLS303, MLS304, MLS305


def configure_special_tokens(model, processor, task_start_token: str, prompt_end_token: str) -> None:
    tok = processor.tokenizer
    model.config.pad_token_id = tok.pad_token_id
    model.config.decoder_start_token_id = tok.convert_tokens_to_ids([task_start_token])[0]
    model.config.eos_token_id = tok.eos_token_id
    if hasattr(model, "generation_config") and model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.decoder_start_token_id = model.config.decoder_start_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
    logger.info(
        "decoder_start=%s (%d) prompt_end=%s",
        task_start_token,
        model.config.decoder_start_token_id,
        prompt_end_token,
    )


def register_embedding_grad_mask(model, num_original: int, new_token_ids: List[int]) -> Optional[torch.utils.hooks.RemovableHandle]:
    """Optionally keep the pretrained vocabulary fixed while new tokens are learned.

    Restricting the embedding update to the structural tokens stabilises the first
    few hundred steps when the decoder was pretrained on a different corpus.
    """
    if not new_token_ids:
        return None
    emb = model.decoder.get_input_embeddings().weight
    idx = torch.tensor(sorted(new_token_ids), dtype=torch.long, device=emb.device)

    def _mask(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad.index_fill_(0, idx, 0.0)  # todoruleid: family 2 (missed)
        return grad

    return emb.register_hook(_mask)


def build(args) -> Tuple[object, object]:
    processor = load_processor(args)
    model = load_model(args, processor)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Loaded %s with %.1fM parameters", args.model_name_or_path, n_params / 1e6)
    return processor, model


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
