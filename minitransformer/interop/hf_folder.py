"""A local Hugging Face model folder: ``config.json``, ``model.safetensors`` and, for GPT-2's
tokenizer, ``vocab.json`` + ``merges.txt`` (BERT's ``vocab.txt`` is read by ``hf_bert.py``). Read and written here with the safetensors library's
NumPy API, so neither torch nor transformers is needed; nothing is downloaded.

Only safetensors weights are read: ``pytorch_model.bin`` is a pickle, which can run code when
loaded, and reading it would need torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np  # I/O at the edge: the folder's tensors are host arrays

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
VOCAB, MERGES = "vocab.json", "merges.txt"


class HFFolder(NamedTuple):
    path: Path
    config: dict                    # config.json as a dict
    tensors: dict                   # name -> host array, as stored (float32 unless saved otherwise)


def read_hf_folder(path) -> HFFolder:
    """The config and tensors of a local folder; errors name the missing file and what to do."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a directory: expected a Hugging Face model folder "
                         f"holding {CONFIG} and {WEIGHTS}")
    if not (path / CONFIG).is_file():
        raise ValueError(f"{str(path)!r} has no {CONFIG}: not a Hugging Face model folder")
    if not (path / WEIGHTS).is_file():
        others = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.index.json"))
        hint = (f"; found {others}: convert them to a single {WEIGHTS} first (pickled .bin files are "
                "not read, and sharded weights are not supported)" if others else "")
        raise ValueError(f"{str(path)!r} has no {WEIGHTS}{hint}")
    config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"{path / CONFIG}: expected a JSON object, got {type(config).__name__}")
    return HFFolder(path, config, load_file(str(path / WEIGHTS)))


def read_hf_tokenizer(path):
    """GPT-2's byte-level BPE from vocab.json + merges.txt in the folder, or None without them."""
    from ..data.bpe import GPT2BPETokenizer

    path = Path(path)
    if not ((path / VOCAB).is_file() and (path / MERGES).is_file()):
        return None
    return GPT2BPETokenizer.from_files(path / VOCAB, path / MERGES)


def write_hf_folder(path, config: dict, tensors: dict) -> list[Path]:
    """Write config.json and model.safetensors (metadata format "pt", which transformers expects
    of the files it loads into PyTorch)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path / WEIGHTS),
              metadata={"format": "pt"})
    return [path / CONFIG, path / WEIGHTS]
