"""The demo corpus's ground-truth vocabulary: what the demo renders, and what the filter's
``labels.demo`` may name as stand-ins for hand labels."""
from __future__ import annotations

ITEM_KINDS = ("pot", "distractor", "junk")
JUNK_TYPES = ("exact_duplicate", "near_duplicate", "blank", "dark", "light", "blurry",
              "low_information", "tiny", "odd_aspect", "grayscale", "truncated", "not_image")
LABEL_NAMES = ITEM_KINDS + JUNK_TYPES
