"""Layer 0, chapter 1 (book 1.2 and the embedding aside): the mathematics before language models.

- `quadratic_loss.py`: the quadratic (MSE) loss of a line through three points, gradient descent
  to its closed-form optimum (1.2);
- `embedding.py`: an embedding layer is a one-hot vector times a linear layer, output and gradient.
"""
