"""Audio files, the codecs (waveform <-> latents) and the band layout of the masks."""
