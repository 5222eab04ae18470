"""Tiny Hugging Face models built from configs, for tests that must never download: a BERT with a
real word vocabulary, and a ViT with its PIL image processor.

The tokenizer is assembled with the ``tokenizers`` library (WordPiece with BERT's normaliser,
pre-tokenizer and [CLS]/[SEP] template) and saved with ``save_pretrained``, so
``AutoTokenizer.from_pretrained`` loads the full vocabulary. (Under transformers 5,
``BertTokenizerFast(vocab_file=...)`` silently builds a 5-token vocabulary: every word is [UNK].)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tiny_bert(words: Sequence[str], out: Path, layers: int = 1, hidden: int = 32) -> Path:
    """A randomly initialised BERT (seed 0) with a word-level vocabulary of ``words``, saved to ``out``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(dict.fromkeys([*SPECIAL, *words]))}
    core = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    out.mkdir(parents=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=2, intermediate_size=hidden, max_position_embeddings=64)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_vit(out: Path, hidden: int = 32, image_size: int = 16) -> Path:
    """A randomly initialised ViT (seed 0) over ``image_size`` square images in 8 x 8 patches, and its
    PIL image processor, saved to ``out`` as a model folder ``omni enrich visual --model`` loads."""
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=hidden, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=2 * hidden)
    out.mkdir(parents=True, exist_ok=True)
    ViTModel(config).save_pretrained(out)
    ViTImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out
