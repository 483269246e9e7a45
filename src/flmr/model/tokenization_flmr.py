"""Query and context tokenizers of FLMR (BERT WordPiece with ColBERT's [Q]/[D] markers).

Both prepend ``". "`` to every text so that position 1 holds a placeholder, which is then
overwritten by the marker token: ``[unused0]`` for queries, ``[unused1]`` for documents.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import BatchEncoding, BertTokenizer

from .errors import ModelInputError

QUERY_MARKER = "[unused0]"
CONTEXT_MARKER = "[unused1]"
MARKER_PLACEHOLDER = ". "
DEFAULT_QUERY_MAXLEN = 32
DEFAULT_DOC_MAXLEN = 512


def _as_list(text: str | list[str]) -> list[str]:
    if isinstance(text, str):
        return [text]
    if not isinstance(text, (list, tuple)) or not all(isinstance(t, str) for t in text):
        raise TypeError(f"expected a string or a list of strings, got {type(text).__name__}")
    return list(text)


class _MarkedBertTokenizer(BertTokenizer):
    """BERT WordPiece that marks position 1 of every text, and also saves ``vocab.txt``."""

    def _encode_marked(self, text: str | list[str], marker_id: int, **kwargs: Any) -> BatchEncoding:
        texts = [MARKER_PLACEHOLDER + t for t in _as_list(text)]
        encoding = super().__call__(texts, **kwargs)
        encoding["input_ids"][:, 1] = marker_id
        return encoding

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> tuple[str, ...]:
        files = super().save_pretrained(save_directory, *args, **kwargs)
        vocab_file = os.path.join(save_directory, "vocab.txt")
        tokens = sorted(self.get_vocab().items(), key=lambda item: item[1])
        with open(vocab_file, "w", encoding="utf-8") as handle:
            handle.writelines(token + "\n" for token, _ in tokens)
        return (*files, vocab_file)


class FLMRContextEncoderTokenizer(_MarkedBertTokenizer):
    r"""Tokenizer of documents: pads to ``max_length`` (at most ``doc_maxlen``) and marks position 1 as [D].

    Args:
        doc_maxlen: the largest length a call may ask for (512 by default).
        text_config: accepted for compatibility with later versions of the original; unused.

    Example:
        >>> tok = FLMRContextEncoderTokenizer.from_pretrained("my_checkpoint", subfolder="context_tokenizer")
        >>> enc = tok(["Paris is the capital of France."], max_length=16)
        >>> enc["input_ids"].shape
        torch.Size([1, 16])
    """

    def __init__(
        self, *args: Any, doc_maxlen: int = DEFAULT_DOC_MAXLEN, text_config: Any = None, **kwargs: Any
    ):
        super().__init__(*args, doc_maxlen=doc_maxlen, **kwargs)
        self.doc_maxlen = doc_maxlen
        self.D_marker_token_id = self.convert_tokens_to_ids(CONTEXT_MARKER)

    def __call__(
        self,
        text: str | list[str],
        padding: str | bool = "max_length",
        truncation: str | bool = "longest_first",
        max_length: int = DEFAULT_DOC_MAXLEN,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenize documents; returns ``input_ids`` and ``attention_mask`` of shape (batch, max_length)."""
        return self._encode_marked(
            text,
            self.D_marker_token_id,
            padding=padding,
            truncation=truncation,
            max_length=min(max_length, self.doc_maxlen),
            return_tensors=return_tensors,
            **kwargs,
        )


class FLMRQueryEncoderTokenizer(_MarkedBertTokenizer):
    r"""Tokenizer of queries: pads to ``query_maxlen`` with [MASK] tokens and marks position 1 as [Q].

    The attention mask stays 0 on the [MASK] padding unless ``attend_to_mask_tokens`` is true.

    Args:
        query_maxlen: default length of every query (32).
        attend_to_mask_tokens: attend to the [MASK] padding.
        text_config: an [`FLMRTextConfig`]; its ``query_maxlen`` is used when the tokenizer's own
            configuration does not set one.

    Example:
        >>> tok = FLMRQueryEncoderTokenizer.from_pretrained("my_checkpoint", subfolder="query_tokenizer")
        >>> enc = tok(["What is the capital of France?"])
        >>> enc["input_ids"].shape
        torch.Size([1, 32])
    """

    def __init__(
        self,
        *args: Any,
        query_maxlen: int | None = None,
        attend_to_mask_tokens: bool = False,
        text_config: Any = None,
        **kwargs: Any,
    ):
        if query_maxlen is None:
            query_maxlen = getattr(text_config, "query_maxlen", DEFAULT_QUERY_MAXLEN)
        super().__init__(
            *args, query_maxlen=query_maxlen, attend_to_mask_tokens=attend_to_mask_tokens, **kwargs
        )
        self.query_maxlen = query_maxlen
        self.attend_to_mask_tokens = attend_to_mask_tokens
        self.Q_marker_token_id = self.convert_tokens_to_ids(QUERY_MARKER)

    def __call__(
        self,
        text: str | list[str],
        padding: str | bool = "max_length",
        truncation: str | bool = True,
        max_length: int | None = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenize queries; returns ``input_ids`` and ``attention_mask`` of shape (batch, max_length)."""
        encoding = self._encode_marked(
            text,
            self.Q_marker_token_id,
            padding=padding,
            truncation=truncation,
            max_length=max_length or self.query_maxlen,
            return_tensors=return_tensors,
            **kwargs,
        )
        ids, mask = encoding["input_ids"], encoding["attention_mask"]
        ids[ids == self.pad_token_id] = self.mask_token_id
        if self.attend_to_mask_tokens:
            mask[ids == self.mask_token_id] = 1
        return BatchEncoding({"input_ids": ids, "attention_mask": mask}, tensor_type=None)


# One backend serves both names: transformers 5 tokenizers are all backed by `tokenizers`.
FLMRQueryEncoderTokenizerFast = FLMRQueryEncoderTokenizer
FLMRContextEncoderTokenizerFast = FLMRContextEncoderTokenizer


def punctuation_token_ids(tokenizer: BertTokenizer) -> set[int]:
    """Ids of the first token of every character of ``string.punctuation`` (masked in documents)."""
    import string

    return {tokenizer.encode(symbol, add_special_tokens=False)[0] for symbol in string.punctuation}


def first_token_id(tokenizer: BertTokenizer, text: str) -> int:
    """Id of the first token of ``text`` encoded without special tokens.

    Raises:
        ModelInputError: ``text`` encodes to no token (e.g. it is blank).
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ModelInputError(f"{text!r} encodes to no token with {type(tokenizer).__name__}")
    return ids[0]


__all__ = [
    "FLMRContextEncoderTokenizer",
    "FLMRContextEncoderTokenizerFast",
    "FLMRQueryEncoderTokenizer",
    "FLMRQueryEncoderTokenizerFast",
]
