"""InternVideo2's text tokenisation (uncased WordPiece, `[CLS]` first, no `[SEP]`)."""

from __future__ import annotations

import os

import numpy as np

VOCAB_FILE = "vocab.txt"


class Tokenizer:
  """InternVideo2's text tokenisation: uncased WordPiece (`transformers.BertTokenizer`),
  `[CLS]` + the first `max_len - 1` pieces, NO `[SEP]` (the vendored tokenizer's quirk),
  right-padded with `[PAD]`.
  """

  def __init__(self, vocab_dir: str, max_len: int = 40,
               option: str = "config.vlm.internvideo2.tokenizer"):
    path = os.path.join(os.path.expanduser(vocab_dir), VOCAB_FILE)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"{option}={vocab_dir!r} has no {VOCAB_FILE}: expected a directory holding the "
          f"BERT WordPiece vocabulary (bert-large-uncased's {VOCAB_FILE}, one token a line)")
    from transformers import BertTokenizer  # pylint: disable=g-import-not-at-top
    # Uncased: lower-case, strip accents, split punctuation and CJK, as the reference.
    self._tok = BertTokenizer(path, do_lower_case=True)
    self.max_len = max_len
    self.vocab_path = path

  def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`N` strings -> int32 `input_ids (N, max_len)`, `attention_mask (N, max_len)`."""
    ids = np.full((len(texts), self.max_len), self._tok.pad_token_id, np.int32)
    mask = np.zeros((len(texts), self.max_len), np.int32)
    for i, text in enumerate(texts):
      pieces = self._tok.convert_tokens_to_ids(self._tok.tokenize(text))[:self.max_len - 1]
      row = [self._tok.cls_token_id] + pieces
      ids[i, :len(row)] = row
      mask[i, :len(row)] = 1
    return ids, mask
