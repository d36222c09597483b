"""Building blocks of the model below the card's modules: fixed masks, mask statistics,
dropout and the model configuration."""
