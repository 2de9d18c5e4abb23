"""Layer 2, checkpoint files (book 5): the formats models come and go in, read without pickle.

- `safetensors.py`: our reader (header checked, tensors memory-mapped) and writer;
- `hf.py`: Hugging Face folders: config.json, sharded indexes, `pytorch_model.bin` through
  `torch.load(weights_only=True)`, and the key layouts of the model families;
- `checks.py`: what is checked before anything is built: config.json fields by type and range,
  sizes against memory, the layer count against the file.
"""
