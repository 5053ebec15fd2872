"""A tiny random Llama saved to a folder (offline, about a second): a real model for embedding
tests. Random weights still map near-identical texts to near-identical pooled states, which is
what selection and similarity tests plant on."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "apple", "river", "mountain", "cloud", "guitar", "number", "seven", "plus", "three",
    "equals", "ten", "code", "python", "function", "list", "sort", "the", "a", "of", "is",
    "what", "how", "why", "write", "poem", "story", "about", "sea", "sky", "king", "train",
    "station", "ticket", "price", "bread", "flour", "oven", "recipe", "planet", "orbit", "star",
    "moon",
)


def build_tiny_embedder(folder: Path, hidden: int = 64) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512, initializer_range=0.2,
                         eos_token_id=tok.eos_token_id,
                         bos_token_id=None, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
