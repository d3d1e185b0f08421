"""Frontprop inside a pretrained language model.

``corpus`` (two text corpora that ship with Python: its standard library's source code and its
English help topics; random windows of them), ``model`` (a small bias-free causal transformer, pretrained with backprop
and cached under ``data/`` by its config; ``LanguageModel``, the wrapper the experiment works on,
also around a Hugging Face causal LM when ``transformers`` is installed), ``dropin`` (a trained
Linear as a Frontprop layer that starts out computing what the Linear computed) and ``finetune``
(perplexity, continued training by Frontprop or backprop at matched tokens, its cost, sampling).

May import: torch, tqdm, ``fpwb.layers``, ``fpwb.evaluation``, ``fpwb.studies`` (memory probes); ``transformers`` only inside
``model.load_hf``, guarded.
"""
from .corpus import CORPORA, corpus_ids, corpus_text, random_windows
from .dropin import BIAS_POLICIES, FpDropIn, calibration_inputs, convert, recalibrate
from .finetune import ARMS, active_share, adapt, generate, perplexity, trainable_only
from .model import (CheckpointCorruptError, LanguageModel, TinyConfig, TinyGPT, load_hf,
                    load_or_pretrain, pretrain, tiny_language_model)

__all__ = ["CORPORA", "corpus_text", "corpus_ids", "random_windows",
           "BIAS_POLICIES", "FpDropIn", "calibration_inputs", "convert", "recalibrate",
           "ARMS", "active_share", "adapt", "generate", "perplexity", "trainable_only",
           "CheckpointCorruptError", "LanguageModel", "TinyConfig", "TinyGPT", "load_hf",
           "load_or_pretrain", "pretrain", "tiny_language_model"]
