"""Pictures of masks, spectrograms and training curves (matplotlib, no screen)."""
