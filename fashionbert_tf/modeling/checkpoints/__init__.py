"""Pre-trained BERT weights into the FashionBERT encoder (paper 3.1: "We reuse the pre-trained
parameters from the 12-layer BERT-base").

One reader per source format turns its checkpoint into one table, canonical name -> float32 array
(`canonical_table.PretrainedBert`, with the encoder sizes the weights imply):
  hf_safetensors.py  a Hugging Face BERT `model.safetensors` + `config.json` (the offline default);
  tfhub.py           a TF-Hub BERT SavedModel, a directory or a handle (TF-Hub's cache);
  model_garden.py    a Model Garden TF2 object-based checkpoint.
Start at `readers.read_pretrained_bert(format, path)`; `assign.assign_pretrained_bert(model,
pretrained)` then checks and copies the table into a built model.
"""
