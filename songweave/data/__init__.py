"""Songs and pairs on disk: the pair manifest, preparing pairs from a folder of songs, the demo's
synthetic music, the latent cache and the training dataset."""
