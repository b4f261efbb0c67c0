"""The LM tokenizer: Qwen byte-level BPE plus the 65 535 `<|audio_code_N|>` tokens at id 151669 + N.

The official LM folders ship `tokenizer.json`, read here with the `tokenizers` library directly
(transformers' slow rebuild of 65 k added tokens costs seconds for no benefit). Folders with only
`vocab.json` + `merges.txt` (the Qwen tokenizer a ComfyUI install carries) go through
transformers' `AutoTokenizer`; the audio-code tokens are added when missing.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Optional

from ..errors import CheckpointError
from .constants import AUDIO_CODE_BASE, IM_END_ID, ENDOFTEXT_ID, NUM_CODE_SLOTS


def _audio_code_tokens() -> list[str]:
    return [f"<|audio_code_{n}|>" for n in range(NUM_CODE_SLOTS)]


class LMTokenizer:
    """encode / decode with exactly the ids of the reference tokenizer (no special tokens added)."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        self.folder = folder
        self.chat_template: Optional[str] = None
        template = folder / "chat_template.jinja"
        if template.is_file():
            self.chat_template = template.read_text(encoding="utf-8")
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._hf = None
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
            self._fast = None
        else:
            raise CheckpointError(
                f"no tokenizer in {folder}: expected tokenizer.json (official LM folder) or "
                "vocab.json + merges.txt (Qwen tokenizer files). Pass tokenizer_path=<official "
                "acestep-5Hz-lm-* folder> or the Qwen tokenizer folder of your ComfyUI install."
            )
        self._ensure_audio_codes()
        self.eos_token_id = IM_END_ID
        self.pad_token_id = ENDOFTEXT_ID

    def _token_to_id(self, token: str) -> Optional[int]:
        if self._fast is not None:
            return self._fast.token_to_id(token)
        tid = self._hf.convert_tokens_to_ids(token)
        return None if tid == self._hf.unk_token_id else tid

    def _ensure_audio_codes(self) -> None:
        first = self._token_to_id("<|audio_code_0|>")
        if first is None:
            # A plain Qwen tokenizer: append the code tokens right after the 151669 base entries.
            if len(self) != AUDIO_CODE_BASE:
                raise CheckpointError(
                    f"tokenizer in {self.folder} has {len(self)} entries and no audio-code tokens; "
                    f"expected a Qwen3 tokenizer with {AUDIO_CODE_BASE} entries or the LM's own tokenizer"
                )
            if self._fast is not None:
                self._fast.add_tokens(_audio_code_tokens())
            else:
                self._hf.add_tokens(_audio_code_tokens())
            first = self._token_to_id("<|audio_code_0|>")
        last = self._token_to_id(f"<|audio_code_{NUM_CODE_SLOTS - 1}|>")
        if first != AUDIO_CODE_BASE or last != AUDIO_CODE_BASE + NUM_CODE_SLOTS - 1:
            raise CheckpointError(
                f"tokenizer in {self.folder} puts <|audio_code_0|> at id {first}, expected {AUDIO_CODE_BASE}"
            )

    def __len__(self) -> int:
        if self._fast is not None:
            return self._fast.get_vocab_size(with_added_tokens=True)
        return len(self._hf)

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return self._fast.encode(text, add_special_tokens=False).ids
        return self._hf.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self._fast is not None:
            return self._fast.decode(ids, skip_special_tokens=False)
        return self._hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @cached_property
    def token_texts(self) -> list[str]:
        """Decoded text of every single token id (what the reference's `decode([id])` returns)."""
        n = len(self)
        if self._fast is not None:
            return self._fast.decode_batch([[i] for i in range(n)], skip_special_tokens=False)
        return [self.decode([i]) for i in range(n)]
