"""Layer 4, fine-tuning (book 5.3-5.6): classifying emotions five ways, LoRA, instruction tuning.

- `baselines.py`: the baselines of 5.3: `BagOfWords` + `LogisticRegression` (scikit-learn's pair,
  rebuilt) and the book's `CNNClassifier`;
- `lbfgs.py`: the full-batch L-BFGS minimiser the logistic regression is fitted with;
- `cnn_data.py`: the CNN's data: the book's whitespace tokeniser, examples and loss for the engine;
- `word_vectors.py`: word2vec files (binary or text) for the CNN, read by our own parser;
- `metrics.py`: accuracy and the confusion matrix the emotion stages report;
- `sft.py`: supervised fine-tuning of a language model on prompt/completion pairs (5.3.2, 5.3.3);
- `lora_layers.py`: low-rank adapters on linear and embedding layers (5.5.2);
- `lora.py`: LoRA adapters saved and loaded in PEFT's folder format, and every LoRA name (5.5.2);
- `classifier.py`: GPT-2 with a classification head read at the last real token (5.6).
"""
