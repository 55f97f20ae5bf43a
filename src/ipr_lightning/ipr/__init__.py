"""IPR iterations: step-wise exploration, Monte-Carlo step values, contrastive pairs."""
