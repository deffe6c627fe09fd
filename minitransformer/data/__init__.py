"""Tokenizer, corpora (built-in default and UTF-8 files), batching and synthetic tasks."""
from .batching import get_batch, train_val_split
from .corpus import default_corpus, load_text
from .tokenizer import CharTokenizer
