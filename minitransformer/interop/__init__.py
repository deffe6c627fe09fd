"""Interoperability: Hugging Face folders in and out, and ONNX graphs run by onnxruntime.

* ``hf_folder``  reads and writes a local Hugging Face folder (config.json, model.safetensors,
  vocab.json + merges.txt); no network.
* ``hf_gpt2``    the GPT-2 <-> GPT mapping of configurations and weights, both ways.
* ``hf_bert``    the BERT <-> BertModel mapping (transposes, the q/k/v join, the vocabulary rows
  put in the WordPiece tokenizer's order), and vocab.txt in and out.
* ``hf_import`` / ``hf_export``  pick the mapping by ``model_type`` / model kind (one registry
  entry per family) and write a checkpoint / a folder.
* ``onnx_graph`` builds the ONNX graph of a GPT with onnx's helper API (float, or int8 QDQ weights
  from ``compress.quantize``); ``onnx_run`` runs it with onnxruntime, greedy decoding included.
* ``cli``        the ``import-hf`` and ``export`` subcommands.

onnx and onnxruntime are optional (``pip install '.[onnx]'``); transformers is needed only to
check the exported folders (``'.[hf]'``).
"""
