"""Tiny randomly-initialised models of real architectures, built offline into a directory:
a BERT token classifier and a DistilBERT sequence classifier that share one uncased WordPiece
vocabulary, a BART seq2seq model with its own byte-level BPE tokenizer, and a BERT token classifier
with the same vocabulary left cased (as dslim/bert-base-NER), so its tokenizer is another group."""

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForTokenClassification,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertTokenizer,
    PreTrainedTokenizerFast,
)

CORPUS = [
    "Apple Inc. said Tim Cook will visit Goldman Sachs in New York next week.",
    "The trip is a big deal and investors loved it, but some analysts hated the price.",
    "Paris and Berlin are lovely in May; the weather was terrible in London.",
]
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
SMALL = {"max_position_embeddings": 64}


def _vocab() -> dict[str, int]:
    """A lower-case WordPiece vocabulary of the corpus' words, letters, digits and punctuation."""
    words = sorted({w.strip(string.punctuation).lower() for t in CORPUS for w in t.split()} - {""})
    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *pieces, *(f"##{p}" for p in pieces), *words]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def _save(model: torch.nn.Module, tokenizer, out: Path) -> Path:
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)
    return out


def build(root: Path) -> dict[str, Path]:
    """Directories {"ner", "sentiment", "summary", "cased-ner"} under ``root``, each a loadable model."""
    torch.manual_seed(0)
    vocab = _vocab()
    n = len(vocab)
    bert = BertConfig(
        vocab_size=n, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, **SMALL,
        id2label=dict(enumerate(NER_LABELS)), label2id={label: i for i, label in enumerate(NER_LABELS)},
    )  # fmt: skip
    distil = DistilBertConfig(
        vocab_size=n, dim=32, n_layers=2, n_heads=2, hidden_dim=37, **SMALL,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )  # fmt: skip
    # transformers 5 ignores a vocab_file argument (the tokenizer would know only its special tokens).
    paths = {
        "ner": _save(BertForTokenClassification(bert), BertTokenizer(vocab=vocab), root / "bert-ner"),
        "sentiment": _save(
            DistilBertForSequenceClassification(distil), DistilBertTokenizer(vocab=vocab), root / "distilbert"
        ),
    }

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    bart_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        mask_token="<mask>", model_max_length=64,
    )  # fmt: skip
    bart = BartConfig(
        vocab_size=bpe.get_vocab_size(), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, **SMALL,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
    )  # fmt: skip
    paths["summary"] = _save(BartForConditionalGeneration(bart), bart_tokenizer, root / "bart")
    # Built last so the models above keep their weights.
    cased = BertTokenizer(vocab=vocab, do_lower_case=False)
    paths["cased-ner"] = _save(BertForTokenClassification(bert), cased, root / "bert-ner-cased")
    return paths
